import path from "node:path";
import type pg from "pg";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { FatalError } from "../errors.ts";

export const MIGRATIONS_DIR = fileURLToPath(new URL("../../migrations/", import.meta.url));
/**
 * The migrations of masq before its baseline (001 to 018), frozen: only for upgrading a database they made. The
 * baseline (MIGRATIONS_DIR, 101_keys_and_vault to 105_roles) defines each object once, in its form of legacy 018.
 */
export const LEGACY_MIGRATIONS_DIR = path.join(MIGRATIONS_DIR, "legacy");
/** Converts the schema of legacy migration 018 into the baseline's (see its header). */
const LEGACY_CONVERSION = path.join(LEGACY_MIGRATIONS_DIR, "to_baseline.sql");
/**
 * The baseline's first and last migration. It starts at 101, above every legacy version, and a database of the
 * baseline also records the legacy migrations (by their legacy names, as history: the baseline includes their
 * effect). An older masq reads the versions recorded: it finds all of its own, and refuses the database as newer than
 * it knows, where it would otherwise apply its legacy migrations over the baseline's functions.
 */
const BASELINE = { first: 101, last: 105 };
/**
 * The baseline as first numbered (001_keys_and_vault to 005_roles, on main for a while): a database that records it
 * is renumbered in place, its records only (the schema is the same).
 */
const FIRST_NUMBERING = ["001_keys_and_vault", "002_ingest", "003_audit", "004_lifecycle", "005_roles"];

interface Migration {
  version: number;
  name: string;
  sql: string;
}

const MIGRATION_FILE = /^\d{3}_[a-z0-9_]+\.sql$/;

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((f) => MIGRATION_FILE.test(f))
    .sort()
    .map((f) => ({ version: Number(f.slice(0, 3)), name: f.replace(/\.sql$/, ""), sql: readFileSync(path.join(dir, f), "utf8") }));
}

/** The legacy migrations by version, from their file names alone: what a database of the baseline records as history. */
function legacyHistory(): Recorded {
  const files = readdirSync(LEGACY_MIGRATIONS_DIR).filter((f) => MIGRATION_FILE.test(f));
  return new Map(files.map((f) => [Number(f.slice(0, 3)), f.replace(/\.sql$/, "")]));
}

export interface MigrateResult {
  applied: string[];
  version: number;
}

/** version -> name, as masq.schema_migrations holds them. */
type Recorded = Map<number, string>;

/**
 * Applies pending migrations, each in its own transaction and recorded in masq.schema_migrations.
 * Several masq processes may start at once: an advisory lock lets one migrate while the others wait.
 * Applying twice is a no-op; a database migrated by a newer masq is refused rather than guessed at.
 *
 * A database made before the baseline (its recorded migrations are legacy ones, by version and name) is upgraded in
 * place, in one transaction: the legacy migrations it lacks, then the conversion to the baseline, then the baseline's
 * records beside the legacy ones. Nothing is copied out and back: every row, key, vault value and audit row (with its
 * MAC chain) stays where it is; only the ingest ledger is rewritten into its partitions. A database of the baseline's
 * first numbering has its records renumbered, also in one transaction.
 */
export async function migrate(pool: pg.Pool, migrations = loadMigrations(), legacyMigrations?: Migration[]): Promise<MigrateResult> {
  // Their SQL is read only to upgrade a legacy database (any other reads their file names alone: legacyHistory).
  const legacy = () => (legacyMigrations ??= loadMigrations(LEGACY_MIGRATIONS_DIR));
  const client = await pool.connect();
  const applied: string[] = [];
  let kind: Kind | undefined;
  try {
    // Up to date: nothing to do, and nothing that needs the owner's rights (CREATE SCHEMA IF NOT EXISTS needs CREATE on
    // the database even when the schema exists), so a login holding only masq_ingest may start with MASQ_MIGRATE=true.
    const current = await recordedMigrations(client);
    if (current !== undefined) {
      kind = kindOf(current, migrations);
      if (kind === "unknown") refuseNewer(current, migrations);
      if (upToDate(current, migrations)) return { applied, version: Math.max(0, ...current.keys()) };
    }
    try {
      return await applyPending(client, migrations, legacy, applied);
    } catch (err) {
      if ((err as { code?: string }).code !== "42501") throw err;
      const pending =
        kind === "first-numbering" && applied.length === 0
          ? `the renumbering of migrations ${FIRST_NUMBERING.join(", ")} as ${BASELINE.first} to ${BASELINE.last} is pending`
          : `migration(s) ${migrations.filter((m) => !current?.has(m.version) && !applied.includes(m.name)).map((m) => m.name).join(", ")} are pending`;
      throw new FatalError(
        `${pending} and this login may not apply them (${(err as Error).message}): ` +
          "run `masq migrate` once as the schema owner, then start this login with MASQ_MIGRATE=false (or --no-migrate)",
      );
    }
  } finally {
    client.release();
  }
}

/**
 * Whether the database records exactly these migrations, with the legacy history when they include the baseline:
 * none pending, none unknown or newer.
 */
export function upToDate(done: Recorded, migrations: { version: number; name: string }[]): boolean {
  return kindOf(done, migrations) === "baseline" && migrations.every((m) => done.get(m.version) === m.name);
}

/** The migrations recorded in masq.schema_migrations, or undefined when masq never migrated this database. */
async function recordedMigrations(client: pg.PoolClient): Promise<Recorded | undefined> {
  const exists = await client.query<{ ok: boolean }>("SELECT to_regclass('masq.schema_migrations') IS NOT NULL AS ok");
  if (exists.rows[0]?.ok !== true) return undefined;
  const { rows } = await client.query<{ version: number; name: string }>("SELECT version, name FROM masq.schema_migrations");
  return new Map(rows.map((r) => [r.version, r.name]));
}

type Kind = "baseline" | "legacy" | "first-numbering" | "unknown";

/**
 * Which masq made the database, from what it recorded: this one (its migrations, or some of them, or none yet; with
 * the legacy history once the baseline's first is recorded), one of before the baseline (legacy migrations only), one
 * of the baseline's first numbering, or one this masq does not know (a newer masq's).
 */
function kindOf(done: Recorded, migrations: { version: number; name: string }[]): Kind {
  const rows = [...done];
  const own = ([v, name]: [number, string]) => migrations.some((m) => m.version === v && m.name === name);
  const history = legacyHistory();
  const isHistory = ([v, name]: [number, string]) => history.get(v) === name;
  const baselineBegun = migrations.some((m) => m.version === BASELINE.first && done.get(m.version) === m.name);
  if (rows.every((r) => own(r) || (baselineBegun && isHistory(r)))) return "baseline";
  if (rows.every(isHistory)) return "legacy";
  if (rows.every(([v, name]) => FIRST_NUMBERING[v - 1] === name)) return "first-numbering";
  return "unknown";
}

function refuseNewer(done: Recorded, migrations: { version: number; name: string }[]): never {
  const newest = Math.max(0, ...done.keys());
  const latest = migrations.at(-1)?.version ?? 0;
  if (newest > latest) {
    throw new FatalError(
      `the database schema is at migration ${newest}, newer than this masq knows (${latest}); upgrade masq instead of running an older one against it`,
    );
  }
  const history = legacyHistory();
  const known = (v: number, name: string) => history.get(v) === name || migrations.some((m) => m.version === v && m.name === name);
  const unknown = [...done].filter(([v, name]) => !known(v, name)).map(([, name]) => name);
  throw new FatalError(`the database records migrations this masq does not know (${unknown.sort().join(", ")}); upgrade masq instead of running an older one against it`);
}

async function applyPending(client: pg.PoolClient, migrations: Migration[], legacy: () => Migration[], applied: string[]): Promise<MigrateResult> {
  await client.query("SELECT pg_advisory_lock(hashtext('masq.migrate'))");
  try {
    await client.query("CREATE SCHEMA IF NOT EXISTS masq");
    await client.query(
      "CREATE TABLE IF NOT EXISTS masq.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    );
    let done = (await recordedMigrations(client))!;
    const kind = kindOf(done, migrations);
    if (kind === "unknown") refuseNewer(done, migrations);
    if (kind === "legacy") await upgradeLegacy(client, done, migrations, legacy(), applied);
    if (kind === "first-numbering") await renumber(client, applied);
    if (kind !== "baseline") done = (await recordedMigrations(client))!;
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await inTransaction(client, m.name, async () => {
        await client.query(m.sql);
        await record(client, m.version === BASELINE.first ? [...legacyHistory(), [m.version, m.name]] : [[m.version, m.name]]);
      });
      applied.push(m.name);
    }
    return { applied, version: Math.max(migrations.at(-1)?.version ?? 0, ...done.keys()) };
  } finally {
    await client.query("SELECT pg_advisory_unlock(hashtext('masq.migrate'))");
  }
}

async function record(client: pg.PoolClient, rows: [number, string][]): Promise<void> {
  await client.query("INSERT INTO masq.schema_migrations (version, name) SELECT * FROM unnest($1::int[], $2::text[])", [rows.map((r) => r[0]), rows.map((r) => r[1])]);
}

/**
 * A database of the legacy migrations, brought to the baseline in one transaction: a failure anywhere leaves it as it
 * was. The legacy migrations run in their order (each once ran in a transaction of its own, and none needs to) and
 * stay recorded: with the baseline's records they are the history an older masq reads (see BASELINE).
 */
async function upgradeLegacy(client: pg.PoolClient, done: Recorded, migrations: Migration[], legacy: Migration[], applied: string[]): Promise<void> {
  const baseline = migrations.filter((m) => m.version >= BASELINE.first && m.version <= BASELINE.last);
  await inTransaction(client, "legacy upgrade", async () => {
    for (const m of legacy) {
      if (done.has(m.version)) continue;
      await client.query(m.sql);
      await record(client, [[m.version, m.name]]);
      applied.push(`legacy/${m.name}`);
    }
    await client.query(readFileSync(LEGACY_CONVERSION, "utf8"));
    await record(client, baseline.map((m) => [m.version, m.name]));
    applied.push("legacy/to_baseline");
  });
}

/**
 * A database of the baseline's first numbering: its records renumbered (001_keys_and_vault becomes 101_keys_and_vault,
 * and so on) and the legacy history added, as of its first migration. Nothing else changes: the schema is the same.
 */
async function renumber(client: pg.PoolClient, applied: string[]): Promise<void> {
  const history = [...legacyHistory()];
  await inTransaction(client, "renumbering", async () => {
    const r = await client.query<{ name: string }>(
      "UPDATE masq.schema_migrations SET version = version + 100, name = '1' || substr(name, 2) WHERE version <= $1 RETURNING name",
      [FIRST_NUMBERING.length],
    );
    await client.query(
      `INSERT INTO masq.schema_migrations (version, name, applied_at)
       SELECT v, n, coalesce((SELECT applied_at FROM masq.schema_migrations WHERE version = $3), now()) FROM unnest($1::int[], $2::text[]) AS h(v, n)`,
      [history.map((h) => h[0]), history.map((h) => h[1]), BASELINE.first],
    );
    applied.push(...r.rows.map((row) => `renumbered/${row.name}`).sort());
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
