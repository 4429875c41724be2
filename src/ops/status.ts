import { sql } from "kysely";
import type { Db } from "../db/pool.ts";
import { masqQueries } from "../db/schema.ts";

export interface DatabaseStatus {
  schemaVersion: number;
  /** Messages committed since 00:00 UTC today, from the ledger (indexed), by outcome. */
  committedToday: { written: number; quarantined: number };
  lastCommitAt: Date | null;
  ledgerRows: RowCount;
  /** Exact below a million rows; above, the planner's estimate (an exact count would scan the whole table). */
  targetRows: RowCount;
  /** Every other table masq writes (a contract's: one per event type), as schema.name, with its rows; [] when this login may not list them. */
  otherTables: { table: string; rows: RowCount }[];
  quarantine: { reason: string; total: number; last24h: number }[];
  vault: VaultStatus;
}

/**
 * A table's row count. Not exact: `basis` says where the number comes from, the planner's estimate (as of the last
 * ANALYZE) or, for a table never analysed, the server's insert and delete counts; count null when neither exists.
 */
export interface RowCount {
  count: number | null;
  exact: boolean;
  basis?: "planner" | "activity" | "never analysed";
}

export interface VaultStatus {
  /** Distinct originals held (exact below a million, else an estimate). */
  values: RowCount;
  byKind: Record<string, number> | null;
  /** On disk, indexes included. */
  bytes: number;
  dataKeys: number;
  /** Master keys that wrap masq's keys: more than one means a master key rotation is not finished. */
  masterKeys: string[];
  pseudonymKey: { version: number; provider: string } | null;
  /** A pseudonym key rotation in progress: the version being replaced. */
  retiringVersion: number | null;
  /** When the oldest value still recoverable was stored (the vault's created_at; index-backed, 101_keys_and_vault.sql). */
  oldestValueAt: Date | null;
}

/** What `masq status` shows of the database: cheap, index-backed queries only. */
export async function databaseStatus(db: Db, table: { schema: string; name: string }): Promise<DatabaseStatus> {
  const version = await sql<{ v: number | null }>`SELECT max(version) AS v FROM masq.schema_migrations`.execute(masqQueries(db));
  const today = await sql<{ outcome: string; n: number }>`
    SELECT outcome, count(*)::int AS n FROM masq.ingest_ledger
    WHERE committed_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    GROUP BY outcome`.execute(masqQueries(db));
  const last = await sql<{ at: Date | null }>`SELECT max(committed_at) AS at FROM masq.ingest_ledger`.execute(masqQueries(db));
  const ledgerRows = await countRows(db, "masq", "ingest_ledger");
  const targetRows = await countRows(db, table.schema, table.name);
  const otherTables: DatabaseStatus["otherTables"] = [];
  for (const t of await registeredTableNames(db)) {
    if (t.schema === table.schema && t.name === table.name) continue;
    otherTables.push({ table: `${t.schema}.${t.name}`, rows: await countRows(db, t.schema, t.name) });
  }
  const quarantine = await masqQueries(db)
    .selectFrom("masq.quarantine")
    .select([
      "reason",
      sql<number>`count(*)::int`.as("total"),
      sql<number>`(count(*) FILTER (WHERE quarantined_at > now() - interval '24 hours'))::int`.as("last24h"),
    ])
    .where(sql<boolean>`replayed_at IS NULL`)
    .groupBy("reason")
    .orderBy("total", "desc")
    .execute();
  const byOutcome = Object.fromEntries(today.rows.map((r) => [r.outcome, r.n]));
  const vault = await vaultStatus(db);
  return {
    schemaVersion: version.rows[0]?.v ?? 0,
    committedToday: { written: byOutcome.written ?? 0, quarantined: byOutcome.quarantined ?? 0 },
    lastCommitAt: last.rows[0]?.at ?? null,
    ledgerRows,
    targetRows,
    otherTables,
    quarantine,
    vault,
  };
}

async function vaultStatus(db: Db): Promise<VaultStatus> {
  const values = await countRows(db, "masq", "vault");
  const byKind = values.exact
    ? Object.fromEntries(
        (await sql<{ kind: string; n: number }>`SELECT kind, count(*)::int AS n FROM masq.vault GROUP BY kind`.execute(masqQueries(db))).rows.map((r) => [r.kind, r.n]),
      )
    : null;
  const size = await sql<{ bytes: string }>`SELECT pg_total_relation_size('masq.vault') AS bytes`.execute(masqQueries(db));
  const keys = await sql<{ n: number; masters: string[] | null }>`
    SELECT count(*)::int AS n, (SELECT array_agg(DISTINCT master_key_id) FROM (
      SELECT master_key_id FROM masq.data_keys
      UNION SELECT master_key_id FROM masq.pseudonym_keys WHERE master_key_id IS NOT NULL AND state <> 'retired'
      UNION SELECT master_key_id FROM masq.audit_keys) m) AS masters
    FROM masq.data_keys`.execute(masqQueries(db));
  const pk = await sql<{ version: number; state: string; provider: string }>`
    SELECT version, state, provider FROM masq.pseudonym_keys WHERE state IN ('active', 'retiring') ORDER BY version`.execute(masqQueries(db));
  const active = pk.rows.find((r) => r.state === "active");
  const oldest = await sql<{ at: Date | null }>`SELECT min(created_at) AS at FROM masq.vault`.execute(masqQueries(db));
  return {
    values,
    byKind,
    bytes: Number(size.rows[0]?.bytes ?? 0),
    dataKeys: keys.rows[0]?.n ?? 0,
    masterKeys: keys.rows[0]?.masters ?? [],
    pseudonymKey: active ? { version: active.version, provider: active.provider } : null,
    retiringVersion: pk.rows.find((r) => r.state === "retiring")?.version ?? null,
    oldestValueAt: oldest.rows[0]?.at ?? null,
  };
}

/**
 * How many rows a table holds: counted where this login may read it and the planner expects under a million rows
 * (the count gives up after COUNT_TIMEOUT_MS); else the planner's estimate. A table never analysed has no estimate
 * (reltuples = -1, not 0): then the server's own insert and delete counts, which every login may read; without
 * them, unknown. Never a made-up 0.
 */
async function countRows(db: Db, schema: string, name: string): Promise<RowCount> {
  const stats = await sql<{ n: string | null; readable: boolean | null; live: string | null }>`
    SELECT c.reltuples::bigint AS n, has_table_privilege(c.oid, 'SELECT') AS readable, s.n_live_tup AS live
    FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
    WHERE c.oid = to_regclass(${`${schema}.${name}`})`.execute(masqQueries(db));
  const row = stats.rows[0];
  const estimated = Number(row?.n ?? -1);
  if (row?.readable === true && estimated < 1_000_000) {
    const exact = await boundedCount(db, `${schema}.${name}`);
    if (exact !== undefined) return { count: exact, exact: true };
  }
  if (estimated >= 0) return { count: estimated, exact: false, basis: "planner" };
  const live = Number(row?.live ?? 0);
  return live > 0 ? { count: live, exact: false, basis: "activity" } : { count: null, exact: false, basis: "never analysed" };
}

/**
 * The tables the owner registered (a contract's, beside or instead of the login table), by name; none when this
 * login may not read the registry (status shows the configured table alone then).
 */
async function registeredTableNames(db: Db): Promise<{ schema: string; name: string }[]> {
  const may = await sql<{ ok: boolean }>`SELECT has_table_privilege('masq.target_tables', 'SELECT') AS ok`.execute(masqQueries(db));
  if (may.rows[0]?.ok !== true) return [];
  const r = await sql<{ schema: string; name: string }>`
    SELECT n.nspname::text AS schema, c.relname::text AS name FROM masq.target_tables t
    JOIN pg_class c ON c.oid = t.relation JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY t.registered_at, 1, 2`.execute(masqQueries(db));
  return r.rows;
}

/** An exact count may read a whole table: bounded, so that status stays a quick look. */
const COUNT_TIMEOUT_MS = 3_000;

async function boundedCount(db: Db, table: string): Promise<number | undefined> {
  const client = await db.pool.connect();
  try {
    const on = masqQueries(client);
    await sql`BEGIN READ ONLY`.execute(on);
    await sql`SET LOCAL statement_timeout = ${sql.raw(String(COUNT_TIMEOUT_MS))}`.execute(on);
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.table(table)}`.execute(on);
    return Number(rows[0]?.n ?? 0);
  } catch (err) {
    if ((err as { code?: string }).code === "57014") return undefined;
    throw err;
  } finally {
    await sql`ROLLBACK`.execute(masqQueries(client)).catch(() => undefined);
    client.release();
  }
}
