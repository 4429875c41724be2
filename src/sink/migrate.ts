import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import type pg from "pg";
import { FatalError } from "../errors.ts";

export const MIGRATIONS_DIR = fileURLToPath(new URL("../../migrations/", import.meta.url));

interface Migration {
  version: number;
  name: string;
  sql: string;
}

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((f) => ({ version: Number(f.slice(0, 3)), name: f.replace(/\.sql$/, ""), sql: readFileSync(path.join(dir, f), "utf8") }));
}

export interface MigrateResult {
  applied: string[];
  version: number;
}

/**
 * Applies pending migrations, each in its own transaction and recorded in masq.schema_migrations.
 * Several masq processes may start at once: an advisory lock lets one migrate while the others wait.
 * Applying twice is a no-op; a database migrated by a newer masq is refused rather than guessed at.
 */
export async function migrate(pool: pg.Pool, migrations = loadMigrations()): Promise<MigrateResult> {
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    // Up to date: nothing to do, and nothing that needs the owner's rights (CREATE SCHEMA IF NOT EXISTS needs CREATE on
    // the database even when the schema exists), so a login holding only masq_ingest may start with MASQ_MIGRATE=true.
    const current = await appliedVersions(client);
    const latest = migrations.at(-1)?.version ?? 0;
    if (current !== undefined && migrations.every((m) => current.has(m.version))) {
      refuseNewer(current, latest);
      return { applied, version: Math.max(latest, ...current) };
    }
    try {
      return await applyPending(client, migrations, applied);
    } catch (err) {
      if ((err as { code?: string }).code !== "42501") throw err;
      const pending = migrations.filter((m) => !current?.has(m.version) && !applied.includes(m.name)).map((m) => m.name);
      throw new FatalError(
        `migration(s) ${pending.join(", ")} are pending and this login may not apply them (${(err as Error).message}): ` +
          "run `masq migrate` once as the schema owner, then start this login with MASQ_MIGRATE=false (or --no-migrate)",
      );
    }
  } finally {
    client.release();
  }
}

/** The versions recorded in masq.schema_migrations, or undefined when masq never migrated this database. */
async function appliedVersions(client: pg.PoolClient): Promise<Set<number> | undefined> {
  const exists = await client.query<{ ok: boolean }>("SELECT to_regclass('masq.schema_migrations') IS NOT NULL AS ok");
  if (exists.rows[0]?.ok !== true) return undefined;
  const { rows } = await client.query<{ version: number }>("SELECT version FROM masq.schema_migrations");
  return new Set(rows.map((r) => r.version));
}

function refuseNewer(done: Set<number>, latest: number): void {
  const newest = Math.max(0, ...done);
  if (newest > latest) {
    throw new FatalError(
      `the database schema is at migration ${newest}, newer than this masq knows (${latest}); upgrade masq instead of running an older one against it`,
    );
  }
}

async function applyPending(client: pg.PoolClient, migrations: Migration[], applied: string[]): Promise<MigrateResult> {
  await client.query("SELECT pg_advisory_lock(hashtext('masq.migrate'))");
  try {
    await client.query("CREATE SCHEMA IF NOT EXISTS masq");
    await client.query(
      "CREATE TABLE IF NOT EXISTS masq.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    );
    const { rows } = await client.query<{ version: number }>("SELECT version FROM masq.schema_migrations");
    const done = new Set(rows.map((r) => r.version));
    const latest = migrations.at(-1)?.version ?? 0;
    const newest = Math.max(0, ...done);
    refuseNewer(done, latest);
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await client.query("BEGIN");
      try {
        await client.query(m.sql);
        await client.query("INSERT INTO masq.schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK");
        if ((err as { code?: string }).code === "42501") throw err;
        throw new FatalError(`migration ${m.name} failed: ${(err as Error).message}`);
      }
      applied.push(m.name);
    }
    return { applied, version: Math.max(latest, newest) };
  } finally {
    await client.query("SELECT pg_advisory_unlock(hashtext('masq.migrate'))");
  }
}
