import path from "node:path";
import type pg from "pg";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { FatalError } from "../errors.ts";

export const MIGRATIONS_DIR = fileURLToPath(new URL("../../migrations/", import.meta.url));
/**
 * The migrations of masq before its baseline (001 to 018), frozen: only for upgrading a database they made. The
 * baseline (MIGRATIONS_DIR) defines each object once, in its form of legacy migration 018.
 */
export const LEGACY_MIGRATIONS_DIR = path.join(MIGRATIONS_DIR, "legacy");
/** Converts the schema of legacy migration 018 into the baseline's (see its header). */
const LEGACY_CONVERSION = path.join(LEGACY_MIGRATIONS_DIR, "to_baseline.sql");
/** The baseline migrations that the conversion's result stands for: recorded in place of the legacy ones. */
const BASELINE_OF_LEGACY = 5;

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

type Recorded = Map<number, string>;

/**
 * Applies pending migrations, each in its own transaction and recorded in masq.schema_migrations.
 * Several masq processes may start at once: an advisory lock lets one migrate while the others wait.
 * Applying twice is a no-op; a database migrated by a newer masq is refused rather than guessed at.
 *
 * A database made before the baseline (its recorded migrations are legacy ones, by version and name) is upgraded in
 * place, in one transaction: the legacy migrations it lacks, then the conversion to the baseline, then the baseline's
 * records in place of the legacy ones. Nothing is copied out and back: every row, key, vault value and audit row
 * (with its MAC chain) stays where it is; only the ingest ledger is rewritten into its partitions.
 */
export async function migrate(pool: pg.Pool, migrations = loadMigrations(), legacyMigrations?: Migration[]): Promise<MigrateResult> {
  // Read only for a database that is not the baseline's: start-up of an up-to-date one reads none of them.
  const legacy = () => (legacyMigrations ??= loadMigrations(LEGACY_MIGRATIONS_DIR));
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    // Up to date: nothing to do, and nothing that needs the owner's rights (CREATE SCHEMA IF NOT EXISTS needs CREATE on
    // the database even when the schema exists), so a login holding only masq_ingest may start with MASQ_MIGRATE=true.
    const current = await recordedMigrations(client);
    const latest = migrations.at(-1)?.version ?? 0;
    if (current !== undefined) {
      const kind = kindOf(current, migrations, legacy);
      if (kind === "unknown") refuseNewer(current, latest);
      if (kind === "baseline" && migrations.every((m) => current.has(m.version))) return { applied, version: Math.max(latest, ...current.keys()) };
    }
    try {
      return await applyPending(client, migrations, legacy, applied);
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

/** The migrations recorded in masq.schema_migrations (version -> name), or undefined when masq never migrated this database. */
async function recordedMigrations(client: pg.PoolClient): Promise<Recorded | undefined> {
  const exists = await client.query<{ ok: boolean }>("SELECT to_regclass('masq.schema_migrations') IS NOT NULL AS ok");
  if (exists.rows[0]?.ok !== true) return undefined;
  const { rows } = await client.query<{ version: number; name: string }>("SELECT version, name FROM masq.schema_migrations");
  return new Map(rows.map((r) => [r.version, r.name]));
}

/**
 * Which masq made the database, from what it recorded: the baseline's migrations (or none yet), the legacy ones, or
 * migrations this masq does not know (a newer masq's).
 */
function kindOf(done: Recorded, migrations: Migration[], legacy: () => Migration[]): "baseline" | "legacy" | "unknown" {
  const matches = (list: Migration[]) => [...done].every(([v, name]) => list.some((m) => m.version === v && m.name === name));
  if (matches(migrations)) return "baseline";
  if (done.size > 0 && matches(legacy())) return "legacy";
  return "unknown";
}

function refuseNewer(done: Recorded, latest: number): never {
  const newest = Math.max(0, ...done.keys());
  if (newest > latest) {
    throw new FatalError(
      `the database schema is at migration ${newest}, newer than this masq knows (${latest}); upgrade masq instead of running an older one against it`,
    );
  }
  const unknown = [...done.values()].sort().join(", ");
  throw new FatalError(`the database records migrations this masq does not know (${unknown}); upgrade masq instead of running an older one against it`);
}

async function applyPending(client: pg.PoolClient, migrations: Migration[], legacy: () => Migration[], applied: string[]): Promise<MigrateResult> {
  await client.query("SELECT pg_advisory_lock(hashtext('masq.migrate'))");
  try {
    await client.query("CREATE SCHEMA IF NOT EXISTS masq");
    await client.query(
      "CREATE TABLE IF NOT EXISTS masq.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    );
    const done = (await recordedMigrations(client))!;
    const latest = migrations.at(-1)?.version ?? 0;
    const kind = kindOf(done, migrations, legacy);
    if (kind === "unknown") refuseNewer(done, latest);
    if (kind === "legacy") {
      await upgradeLegacy(client, done, migrations, legacy(), applied);
      done.clear();
      for (const m of migrations) if (m.version <= BASELINE_OF_LEGACY) done.set(m.version, m.name);
    }
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await inTransaction(client, m.name, async () => {
        await client.query(m.sql);
        await client.query("INSERT INTO masq.schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
      });
      applied.push(m.name);
    }
    return { applied, version: Math.max(latest, ...done.keys()) };
  } finally {
    await client.query("SELECT pg_advisory_unlock(hashtext('masq.migrate'))");
  }
}

/**
 * A database of the legacy migrations, brought to the baseline in one transaction: a failure anywhere leaves it as it
 * was. The legacy migrations run in their order (each once ran in a transaction of its own, and none needs to).
 */
async function upgradeLegacy(client: pg.PoolClient, done: Recorded, migrations: Migration[], legacy: Migration[], applied: string[]): Promise<void> {
  const baseline = migrations.filter((m) => m.version <= BASELINE_OF_LEGACY);
  await inTransaction(client, "legacy upgrade", async () => {
    for (const m of legacy) {
      if (done.has(m.version)) continue;
      await client.query(m.sql);
      applied.push(`legacy/${m.name}`);
    }
    await client.query(readFileSync(LEGACY_CONVERSION, "utf8"));
    await client.query("DELETE FROM masq.schema_migrations");
    await client.query("INSERT INTO masq.schema_migrations (version, name) SELECT * FROM unnest($1::int[], $2::text[])", [
      baseline.map((m) => m.version),
      baseline.map((m) => m.name),
    ]);
    applied.push("legacy/to_baseline");
  });
}

async function inTransaction(client: pg.PoolClient, what: string, work: () => Promise<void>): Promise<void> {
  await client.query("BEGIN");
  try {
    await work();
    await client.query("COMMIT");
  } catch (err) {
    await client.query("ROLLBACK");
    if ((err as { code?: string }).code === "42501") throw err;
    throw new FatalError(`migration ${what} failed: ${(err as Error).message}`);
  }
}
