/**
 * What `run` makes sure of in Postgres before its first batch: migrations applied, the target table present, registered
 * and granted; and the privileges the ingest path needs (ingestNeeds), one list that `masq check` asks Postgres about.
 */
import type pg from "pg";
// Statements on pg, not kysely: `masq run` imports this file at start (prepareDatabase) and must not load
// kysely there (about 0.2 s; test/unit/start-up-imports.test.ts).
import { ConfigError, describeError, TransientError } from "../errors.ts";
import { retryTransient } from "../ingest/backoff.ts";
import type { Logger } from "../log.ts";
import { loadMigrations, migrate, upToDate } from "./migrate.ts";
import { targetText } from "./connection.ts";
import { inTransaction, type Db } from "./pool.ts";
import { classifyPgError } from "./query.ts";
import { qualified, type TableName, ensureTargetTable, verifyTargetTable } from "./tables.ts";
import { verifyContractTables } from "./verify-contract-tables.ts";
import type { ContractPlan } from "../ingest/contract-plan.ts";

/**
 * Brings the database to the state masq needs: migrations applied (unless the operator runs them separately) and
 * the target table present with the expected columns. Waits for a database that is not up yet. With a contract
 * (`masq migrate --contract`), the caller's preparation of its tables instead of the login table
 * (contracts/contract-tables.ts), passed in so that `run` on the login path never loads the contract reader.
 *
 * writesAfter: nothing is written (a migration, the target table, its registration or grant) before it resolves,
 * and not at all if it rejects; what is only read is checked at once. `run` passes its SQS check, so that the
 * database is checked while SQS answers, and a wrong queue still stops masq before it migrates anything.
 */
export async function prepareDatabase(
  db: Db,
  target: TableName | { prepareTables: (opts: TablePreparation) => Promise<void> },
  opts: {
    migrate: boolean;
    logger: Logger;
    signal?: AbortSignal;
    deadlineMs?: number | undefined;
    writesAfter?: Promise<unknown>;
    /** A contract other than login's, for ingestion: its tables are checked, never created or registered (`masq migrate --contract` does). */
    contract?: ContractPlan | undefined;
  },
): Promise<void> {
  const { logger } = opts;
  // The gate's own failure passes through as it is: it is not Postgres's, and waiting here cannot cure it.
  let gateFailure: { err: unknown } | undefined;
  const beforeWriting = async () => {
    try {
      await opts.writesAfter;
    } catch (err) {
      gateFailure = { err };
      throw err;
    }
  };
  await retryTransient(
    async () => {
      try {
        let owner = false;
        if (opts.migrate) {
          // Up to date (the usual start): one query. Else migrate() decides (it applies, or refuses a newer database).
          const migrations = loadMigrations();
          if (opts.writesAfter === undefined || !(await migrationsInPlace(db, migrations))) {
            await beforeWriting();
            const m = await migrate(db.pool, migrations);
            if (m.applied.length > 0) logger.info({ applied: m.applied, version: m.version }, "migrations applied");
            if (m.applied.includes(FACTS_MIGRATION)) await reportUnattributed(db, logger);
          }
          owner = await ownsTargetTables(db);
          if (owner) await warnRefusedRegistrations(db, logger);
          performance.mark("masq:migrate");
        }
        if (opts.contract !== undefined) {
          await verifyContractTables(db.pool, opts.contract);
          performance.mark("masq:target-table");
          return;
        }
        if ("prepareTables" in target) {
          await target.prepareTables({ owner, logger, beforeWriting });
          return;
        }
        const table = target;
        let t = { created: false };
        if (opts.writesAfter !== undefined && (await tableExists(db, table))) await verifyTargetTable(db.pool, table);
        else {
          await beforeWriting();
          t = await ensureTargetTable(db.pool, table);
        }
        performance.mark("masq:target-table");
        if (t.created) logger.info({ table: `${table.schema}.${table.name}` }, "target table created");
        // The owner registers the table it writes: the lifecycle functions act on registered tables only (102_ingest.sql).
        // A login that is not the owner (MASQ_MIGRATE=true on the service login, a no-op when up to date) cannot, and
        // need not: the owner's `masq migrate` registers it.
        if (owner) await registerTargetTable(db, table, logger, beforeWriting);
      } catch (err) {
        if (gateFailure?.err === err) throw err;
        throw classifyPgError(err, db.target);
      }
    },
    {
      what: "connecting to Postgres",
      isTransient: (e) => e instanceof TransientError && gateFailure?.err !== e,
      ...(opts.signal ? { signal: opts.signal } : {}),
      deadlineMs: opts.deadlineMs,
      object: targetText(db.target),
      onRetry: (err, delay) =>
        logger.warn({ err: describeError(err), setting: db.target.setting, target: db.target.where, retryInMs: Math.round(delay) }, "Postgres not ready; waiting"),
    },
  );
}

/** What a preparation of tables other than the login table is told: whether the login may register them, and the gate before writing. */
export interface TablePreparation {
  /** INSERT on masq.target_tables: the owner, who registers tables and grants them to analysts. */
  owner: boolean;
  logger: Logger;
  /** Resolves before anything is written; rejects when nothing may be (prepareDatabase's writesAfter). */
  beforeWriting: () => Promise<void>;
}

/**
 * Whether the database records exactly this masq's migrations: none pending, none newer. False when it cannot tell
 * (no masq schema yet, no right to read it): migrate() then says what is wrong, as it always did.
 */
async function migrationsInPlace(db: Db, migrations: { version: number; name: string }[]): Promise<boolean> {
  try {
    const r = await db.pool.query<{ version: number; name: string }>("SELECT version, name FROM masq.schema_migrations");
    return upToDate(new Map(r.rows.map((row) => [row.version, row.name])), migrations);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === "42P01" || code === "3F000" || code === "42501") return false;
    throw err;
  }
}

async function tableExists(db: Db, table: TableName): Promise<boolean> {
  const r = await db.pool.query<{ oid: string | null }>("SELECT to_regclass($1) AS oid", [qualified(table)]);
  return r.rows[0]?.oid != null;
}

async function ownsTargetTables(db: Db): Promise<boolean> {
  const r = await db.pool.query<{ ok: boolean }>("SELECT has_table_privilege('masq.target_tables', 'INSERT') AS ok");
  return r.rows[0]?.ok === true;
}

/**
 * Called for a login that may register (INSERT on masq.target_tables). What it needs to know is asked in one round
 * trip, so that a start where everything is in place (the usual one) costs one query, not seven.
 *
 * masq erases, prunes and rotates a registered table as the owner of schema masq: a table someone else owns, or one
 * with triggers, rules or row-level security, would run its code with those rights (masq.target_refusal, 102_ingest.sql). Refused here
 * in one line; registrations an earlier masq made without this check which fail the same check are named as a warning (the lifecycle
 * commands refuse to act until they are fixed or unregistered).
 */
async function registerTargetTable(db: Db, table: TableName, logger: Logger, beforeWriting: () => Promise<void>): Promise<void> {
  const r = await db.pool.query<{ why: string | null; registered: boolean; grant: boolean; granted: boolean | null }>(
    `SELECT masq.target_refusal(t.relation) AS why,
            EXISTS (SELECT 1 FROM masq.target_tables r WHERE r.relation = t.relation) AS registered,
            has_table_privilege(t.relation, 'SELECT WITH GRANT OPTION') AS grant,
            CASE WHEN has_table_privilege(t.relation, 'SELECT WITH GRANT OPTION') THEN has_table_privilege('masq_analyst', t.relation, 'SELECT') END AS granted
     FROM (SELECT $1::text::regclass AS relation) t`,
    [qualified(table)],
  );
  const state = r.rows[0]!;
  if (state.why != null) throw new ConfigError("--table", state.why, { what: "a table masq will not register" });
  if (!state.registered || (state.grant && state.granted !== true)) await beforeWriting();
  if (!state.registered) {
    // The login table's subject and pseudonym columns (106_contract_tables.sql), in the same statement as the table.
    await db.pool.query(
      `WITH t AS (INSERT INTO masq.target_tables (relation, subject_column) VALUES ($1::text::regclass, 'user_id') ON CONFLICT DO NOTHING RETURNING relation)
       INSERT INTO masq.target_pseudonym_columns (relation, column_name, kind, recoverable)
       SELECT t.relation, c.column_name, c.kind, true FROM t, (VALUES ('masked_ip'::name, 'ip'), ('masked_device_id'::name, 'device_id')) AS c(column_name, kind)`,
      [qualified(table)],
    );
  }
  // Analysts read every table masq writes (105_roles.sql); a table someone else owns needs its owner to grant it.
  if (!state.grant) logger.warn({ table: qualified(table) }, `cannot grant SELECT on ${qualified(table)} to masq_analyst: grant it as the table's owner`);
  else if (state.granted !== true) await grantToAnalysts(db, table);
}

async function warnRefusedRegistrations(db: Db, logger: Logger): Promise<void> {
  const r = await db.pool.query<{ table: string; why: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS table, masq.target_refusal(t.relation) AS why
     FROM masq.target_tables t JOIN pg_class c ON c.oid = t.relation JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE masq.target_refusal(t.relation) IS NOT NULL`,
  );
  for (const { table, why } of r.rows) {
    logger.warn(
      { table },
      `registered before masq refused such tables: ${why}; until then subject erase, subject export, vault prune and rotate pseudonym-key stop on it, or unregister it once its rows are gone or moved (DELETE FROM masq.target_tables WHERE relation = '${table}'::regclass: the rows of an unregistered table are no longer erased, and vault prune no longer keeps the values they use)`,
    );
  }
}

/**
 * Only when the grant is missing, and one process at a time: replicas starting together would otherwise GRANT the
 * same table at once, and Postgres refuses the second concurrent update of its ACL ("tuple concurrently updated").
 */
async function grantToAnalysts(db: Db, table: TableName): Promise<void> {
  await inTransaction(db.pool, async (client) => {
    await client.query("SELECT pg_advisory_xact_lock(hashtext('masq.target_table'))");
    const has = await client.query<{ ok: boolean }>("SELECT has_table_privilege('masq_analyst', $1::text::regclass, 'SELECT') AS ok", [qualified(table)]);
    if (has.rows[0]?.ok !== true) await client.query(`GRANT SELECT ON TABLE ${qualified(table)} TO masq_analyst`);
  });
}

/** The legacy migration that made a quarantine record's user a fact ingestion writes, with a one-time backfill (run by an upgrade). */
const FACTS_MIGRATION = "legacy/011_quarantine_facts";

/**
 * Records written before legacy migration 011 that its backfill could not attribute (their body was not JSON, or its copy
 * was not kept) name no user: subject export and erasure do not find them. Said once, when the migration runs, with
 * what removes them.
 */
async function reportUnattributed(db: Db, logger: Logger): Promise<void> {
  const r = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.quarantine WHERE user_id IS NULL AND body_ciphertext IS NOT NULL");
  const n = r.rows[0]?.n ?? 0;
  if (n === 0) return;
  logger.warn(
    { records: n },
    "quarantine records of an earlier masq keep an original but name no user (their body was not JSON): subject export and erase do not find them; masq vault prune removes them once older than MASQ_VAULT_RETENTION_DAYS",
  );
}

/**
 * What the ingest path (`masq run`) does in Postgres, as privileges of the login it runs as (SECURITY.md, the
 * masq_ingest role). `masq check` asks Postgres for each; this list is the one place to change when the ingest
 * path changes what it writes (for example definer functions instead of table grants).
 */
export function ingestNeeds(t: TableName): { object: string; kind: "table" | "column" | "function" | "schema"; privilege: string; column?: string }[] {
  const fn = (object: string) => ({ object, kind: "function" as const, privilege: "EXECUTE" });
  return [
    { object: "masq", kind: "schema", privilege: "USAGE" },
    { object: qualified(t), kind: "table", privilege: "INSERT" },
    { object: "masq.ingest_ledger", kind: "table", privilege: "SELECT" },
    { object: "masq.ingest_ledger", kind: "table", privilege: "INSERT" },
    { object: "masq.ingest_ledger", kind: "table", privilege: "DELETE" },
    { object: "masq.quarantine", kind: "table", privilege: "INSERT" },
    // Key rows by their non-secret columns; keys and vault values are written through the functions of 101_keys_and_vault.sql.
    { object: "masq.pseudonym_keys", column: "state", kind: "column", privilege: "SELECT" },
    fn("masq.pseudonym_key_wrapped(integer)"),
    fn("masq.create_first_pseudonym_key(text, text, bytea, text)"),
    fn("masq.lock_pseudonym_key(integer)"),
    fn("masq.lock_vault_epoch()"),
    fn("masq.add_data_key(uuid, text, text, bytea)"),
    fn("masq.add_vault_values(integer, text[], text[], uuid[], bytea[], bytea[])"),
  ];
}

/** The privileges of ingestNeeds() that the current login lacks, as "INSERT on masq.vault"; one query. */
export async function missingIngestPrivileges(pool: pg.Pool, t: TableName): Promise<string[]> {
  const needs = ingestNeeds(t);
  const { rows } = await pool.query<{ ok: boolean[] }>(
    `SELECT array_agg(CASE n.kind
                        WHEN 'table' THEN has_table_privilege(n.object, n.privilege)
                        WHEN 'function' THEN has_function_privilege(n.object, n.privilege)
                        WHEN 'column' THEN has_column_privilege(n.object, n.col, n.privilege)
                        ELSE has_schema_privilege(n.object, n.privilege) END ORDER BY n.i) AS ok
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS n(object, kind, privilege, col, i)`,
    [needs.map((n) => n.object), needs.map((n) => n.kind), needs.map((n) => n.privilege), needs.map((n) => n.column ?? null)],
  );
  const ok = rows[0]?.ok ?? [];
  return needs.filter((_, i) => ok[i] !== true).map((n) => `${n.privilege} on ${n.object}${n.column ? `.${n.column}` : ""}`);
}
