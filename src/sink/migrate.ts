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
      if (newest > latest) {
        throw new FatalError(
          `the database schema is at migration ${newest}, newer than this masq knows (${latest}); upgrade masq instead of running an older one against it`,
        );
      }
      for (const m of migrations) {
        if (done.has(m.version)) continue;
        await client.query("BEGIN");
        try {
          await client.query(m.sql);
          await client.query("INSERT INTO masq.schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
          await client.query("COMMIT");
        } catch (err) {
          await client.query("ROLLBACK");
          throw new FatalError(`migration ${m.name} failed: ${(err as Error).message}`);
        }
        applied.push(m.name);
      }
      return { applied, version: Math.max(latest, newest) };
    } finally {
      await client.query("SELECT pg_advisory_unlock(hashtext('masq.migrate'))");
    }
  } finally {
    client.release();
  }
}
