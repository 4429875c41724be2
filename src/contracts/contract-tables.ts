/**
 * `masq migrate` with a contract: each table the contract writes is created, or given the columns the contract
 * added, and registered for the lifecycle commands with its subject column and its pseudonym columns by kind
 * (masq.target_tables, masq.target_pseudonym_columns; 106_contract_tables.sql). What it would do is decided by
 * contract-columns.ts from what the tables are; nothing is dropped or retyped. prepare-database.ts calls it where it
 * would prepare the login table, after the migrations.
 */
import type pg from "pg";
import { isDeepStrictEqual } from "node:util";
import { ConfigError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { defaultContract, loadContract, type Contract } from "./contract.ts";
import { indexNeeds, planTable, tableNeeds, type IndexNeed, type PseudonymColumn, type TableNeed, type TablePlan, type TableState } from "./contract-columns.ts";
import { inTransaction, type Db } from "../db/pool.ts";
import type { TablePreparation } from "../db/prepare-database.ts";
import { classifyPgError, connect } from "../db/query.ts";
import { qualified, quoteIdent, type TableName } from "../db/tables.ts";

/** How long ALTER TABLE waits for the table's lock before it gives up and tries again. */
const DDL_LOCK_TIMEOUT = "5s";

/** A contract to migrate for, and the setting that named its file (MASQ_CONTRACT or --contract), which errors name. */
export interface ContractTarget {
  contract: Contract;
  setting: string;
}

/**
 * The login contract shipped with masq, or a copy of it: its table is handled as without a contract (MASQ_TABLE, the
 * login layout of tables.ts, registered by prepare-database.ts), so that giving the file changes nothing.
 */
export function isLoginContract(contract: Contract): boolean {
  return isDeepStrictEqual(contract, defaultContract());
}

/**
 * The contract file a setting names (`file`, from MASQ_CONTRACT or --contract), for its tables; undefined without one,
 * or for the login contract shipped with masq (or a copy of it), whose table is MASQ_TABLE's as it always was. A file
 * that does not read is a ConfigError: its first error, and how to see them all.
 */
export function loadContractTarget(file: string | undefined, setting: string): ContractTarget | undefined {
  if (file === undefined) return undefined;
  const loaded = loadContract(file, setting);
  if (loaded.contract === undefined) {
    const more = loaded.errors.length > 1 ? ` (and ${loaded.errors.length - 1} more)` : "";
    throw new ConfigError(setting, `${loaded.errors[0]}${more}`, { hint: "masq check --offline lists every error" });
  }
  return isLoginContract(loaded.contract) ? undefined : { contract: loaded.contract, setting };
}

/**
 * Brings every table of the contract to what it needs, all or nothing: one transaction, under the advisory lock that
 * serialises masq's table creation (db/tables.ts), so that two migrates (or a starting `run`) never race on one table.
 * A change it will not make is refused before anything is written, in one line naming the table, the column and what
 * to do. `owner`: the login may register tables (INSERT on masq.target_tables); another only creates and adds columns.
 */
export async function prepareContractTables(
  db: Db,
  target: ContractTarget,
  opts: TablePreparation,
): Promise<void> {
  const needs = tableNeeds(target.contract);
  if ("refusal" in needs) throw new ConfigError(target.setting, needs.refusal, { what: "a contract masq cannot make tables for" });
  // Indexes on tables that exist are built after the transaction, CONCURRENTLY (buildIndexes): inside it, the build
  // would hold its lock (and ADD COLUMN's, on the same table) for as long as the rows take to read.
  const later: { table: TableName; index: IndexNeed }[] = [];
  await inTransaction(db.pool, async (client) => {
    await client.query("SELECT pg_advisory_xact_lock(hashtext('masq.target_table'))");
    const plans: { need: TableNeed; state: TableState; plan: TablePlan }[] = [];
    for (const need of needs.tables) {
      const state = await readTableState(client, need, target, opts.owner);
      const plan = planTable(need, state);
      if ("refusal" in plan) throw new ConfigError(target.setting, plan.refusal, { what: "a change masq migrate does not make", object: `table ${need.table.schema}.${need.table.name}` });
      plans.push({ need, state, plan });
    }
    const writes = plans.some(({ state, plan }) => plan.ddl.length > 0 || plan.indexes.length > 0 || (opts.owner && (state.registered === undefined || plan.register.length > 0)));
    if (writes) await opts.beforeWriting();
    // ADD COLUMN waits for every reader of the table, and while it waits `run`'s inserts queue behind it: a short
    // wait, retried (a TransientError, prepareDatabase's retryTransient) rather than ingestion stalled behind a long query.
    if (plans.some(({ state, plan }) => state.exists && plan.ddl.length > 0)) await client.query(`SET LOCAL lock_timeout = '${DDL_LOCK_TIMEOUT}'`);
    for (const { need, state, plan } of plans) {
      const name = `${need.table.schema}.${need.table.name}`;
      for (const statement of plan.ddl) await client.query(statement);
      for (const index of plan.indexes) {
        if (state.exists) {
          later.push({ table: need.table, index });
          continue;
        }
        await client.query(index.sql);
        opts.logger.info({ table: name, index: index.name, column: index.column, lookup: index.purpose }, "index created for the lifecycle's lookups");
      }
      if (!state.exists) opts.logger.info({ table: name, events: need.events }, "contract table created");
      else if (plan.added.length > 0) opts.logger.info({ table: name, columns: plan.added }, "columns added to a contract table");
      if (plan.unused.length > 0) opts.logger.info({ table: name, columns: plan.unused }, "columns the contract does not write are kept (masq never drops a column)");
      if (opts.owner) await register(client, need, state, plan, opts.logger);
    }
  });
  if (later.length > 0) await buildIndexes(db.pool, later, opts.logger);
}

/**
 * Indexes on tables that have rows: CREATE INDEX CONCURRENTLY, one at a time, so that `run` goes on writing and
 * analysts reading while the rows are read (twice). A build that was cut short (a migrate killed, a cancelled query)
 * leaves an invalid index under masq's name: it serves no lookup (indexedKeys skips it), so it is dropped and built
 * again. No time limit: the server's statement_timeout is lifted for the session and the client's query timeout for
 * the statement (node-pg's own, 65 s on masq's pools, would abandon a build the server goes on with). A session-level
 * advisory lock keeps two migrates from building the same index.
 */
async function buildIndexes(pool: pg.Pool, later: readonly { table: TableName; index: IndexNeed }[], logger: Logger): Promise<void> {
  const client = await connect(pool);
  try {
    await client.query("SELECT pg_advisory_lock(hashtext('masq.target_index'))");
    await client.query("SET statement_timeout = 0");
    for (const { table: t, index } of later) {
      const table = `${t.schema}.${t.name}`;
      const schema = t.schema;
      const invalid = await client.query(
        `SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2 AND NOT i.indisvalid`,
        [schema, index.name],
      );
      if ((invalid.rowCount ?? 0) > 0) {
        logger.info({ table, index: index.name }, "dropping an index a build cut short left invalid, to build it again");
        await client.query(`DROP INDEX CONCURRENTLY IF EXISTS ${quoteIdent(schema)}.${quoteIdent(index.name)}`);
      }
      logger.info({ table, index: index.name }, "building an index on a table that has rows, CONCURRENTLY: reads and writes go on");
      // query_timeout per query is node-pg's (client.js reads config.query_timeout), missing from its types.
      await client.query({ text: index.concurrently, query_timeout: NO_CLIENT_TIMEOUT_MS } as pg.QueryConfig);
      logger.info({ table, index: index.name, column: index.column, lookup: index.purpose }, "index created for the lifecycle's lookups");
    }
  } catch (err) {
    throw classifyPgError(err);
  } finally {
    await client.query("SELECT pg_advisory_unlock_all(); RESET statement_timeout").catch(() => undefined);
    client.release();
  }
}

/** node-pg's largest query timeout (a timer's limit); 0 would mean "the pool's". */
const NO_CLIENT_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * The table as it is, read under the lock. The owner also learns whether masq would register it (masq.target_refusal:
 * a table someone else owns, or with triggers, rules or row-level security, is refused as prepare-database.ts does).
 */
async function readTableState(client: pg.Pool | pg.PoolClient, need: TableNeed, target: ContractTarget, owner: boolean): Promise<TableState> {
  const name = `${need.table.schema}.${need.table.name}`;
  const exists = (await client.query<{ oid: string | null }>("SELECT to_regclass($1)::oid::text AS oid", [qualified(need.table)])).rows[0]?.oid != null;
  if (!exists) {
    const schema = await client.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [need.table.schema]);
    if (schema.rowCount === 0) throw new ConfigError(target.setting, `schema "${need.table.schema}" of table ${name} does not exist; create it or choose another table`);
    return { exists, columns: [], registered: undefined, indexedKeys: [], takenNames: await takenIndexNames(client, need) };
  }
  const columns = await client.query<{ column: string; data_type: string; max_length: number | null }>(
    `SELECT column_name AS column, data_type, character_maximum_length AS max_length
     FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`,
    [need.table.schema, need.table.name],
  );
  const state: TableState = {
    exists,
    columns: columns.rows.map((c) => ({ column: c.column, dataType: c.data_type, maxLength: c.max_length })),
    registered: undefined,
    indexedKeys: await indexedKeys(client, need),
    takenNames: await takenIndexNames(client, need),
  };
  if (!owner) return state;
  const r = await client.query<{ why: string | null; subject_column: string | null; pseudonyms: PseudonymColumn[] | null }>(
    `SELECT masq.target_refusal(t.relation) AS why, r.subject_column,
            (SELECT json_agg(json_build_object('column', p.column_name, 'kind', p.kind, 'recoverable', p.recoverable))
             FROM masq.target_pseudonym_columns p WHERE p.relation = t.relation) AS pseudonyms
     FROM (SELECT $1::text::regclass AS relation) t LEFT JOIN masq.target_tables r ON r.relation = t.relation`,
    [qualified(need.table)],
  );
  const row = r.rows[0]!;
  if (row.why != null) throw new ConfigError(target.setting, row.why, { what: "a table masq will not register", object: `table ${name}` });
  if (row.subject_column != null) state.registered = { subjectColumn: row.subject_column, pseudonyms: row.pseudonyms ?? [] };
  return state;
}

/**
 * The lookups the table's indexes serve (TableState.indexedKeys): a valid, non-partial btree index whose first key is
 * a column, or that column cast to text (pg_get_indexdef's form of it), under any name, with the operator class and
 * collation the lookup's `=` uses (an index on `col COLLATE "C"` or with text_pattern_ops cannot serve it).
 */
async function indexedKeys(client: pg.Pool | pg.PoolClient, need: TableNeed): Promise<string[]> {
  const r = await client.query<{ key: string }>(
    `SELECT DISTINCT CASE WHEN i.indkey[0] <> 0 THEN a.attname::text ELSE a.attname::text || '::text' END AS key
     FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE i.indrelid = $1::text::regclass AND i.indisvalid AND i.indpred IS NULL AND am.amname = 'btree'
       AND (i.indkey[0] = a.attnum OR (i.indkey[0] = 0 AND pg_get_indexdef(i.indexrelid, 1, false) = format('((%I)::text)', a.attname)))
       AND i.indcollation[0] = CASE WHEN i.indkey[0] <> 0 THEN a.attcollation ELSE (SELECT oid FROM pg_collation WHERE collname = 'default') END
       AND EXISTS (SELECT 1 FROM pg_opclass oc WHERE oc.oid = i.indclass[0] AND oc.opcdefault)`,
    [qualified(need.table)],
  );
  return r.rows.map((x) => x.key);
}

/**
 * Which of masq's index names for the table a relation of its schema has (an index of masq's that serves is left out
 * by planTable; an invalid one of this table's, left by a build cut short, is not taken: buildIndexes builds it again).
 */
async function takenIndexNames(client: pg.Pool | pg.PoolClient, need: TableNeed): Promise<string[]> {
  const names = indexNeeds(need, true).map((i) => i.name);
  const r = await client.query<{ name: string }>(
    `SELECT c.relname::text AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1 AND c.relname = ANY($2::text[])
       AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indexrelid = c.oid AND NOT i.indisvalid AND i.indrelid = to_regclass($3))`,
    [need.table.schema, names, qualified(need.table)],
  );
  return r.rows.map((x) => x.name);
}

/** One table of the contract as `masq check` reports it: what migrate would do, or the error that stops it. */
export type TableReport = { table: string; plan: TablePlan; exists: boolean; registered: boolean | undefined } | { table: string; failed: unknown };

/**
 * What `masq migrate --contract` would do to each table, read without a lock or a write (`masq check`). `owner`: the
 * login may read masq's registrations and would register (registered is undefined otherwise).
 */
export async function inspectContractTables(db: Db, target: ContractTarget, owner: boolean): Promise<TableReport[]> {
  const needs = tableNeeds(target.contract);
  if ("refusal" in needs) return [{ table: "(contract)", failed: new ConfigError(target.setting, needs.refusal, { what: "a contract masq cannot make tables for" }) }];
  const reports: TableReport[] = [];
  for (const need of needs.tables) {
    const table = `${need.table.schema}.${need.table.name}`;
    try {
      const state = await readTableState(db.pool, need, target, owner);
      const plan = planTable(need, state);
      if ("refusal" in plan) reports.push({ table, failed: new ConfigError(target.setting, plan.refusal, { what: "a change masq migrate does not make", object: `table ${table}` }) });
      else reports.push({ table, plan, exists: state.exists, registered: owner ? state.registered !== undefined : undefined });
    } catch (err) {
      reports.push({ table, failed: err });
    }
  }
  return reports;
}

/** Registers the table (or its new pseudonym columns), and lets analysts read it (105_roles.sql), as for the login table. */
async function register(client: pg.PoolClient, need: TableNeed, state: TableState, plan: TablePlan, logger: Logger): Promise<void> {
  const relation = qualified(need.table);
  if (state.registered === undefined) {
    await client.query("INSERT INTO masq.target_tables (relation, subject_column) VALUES ($1::text::regclass, $2)", [relation, need.subjectColumn]);
  }
  if (plan.register.length > 0) {
    await client.query(
      `INSERT INTO masq.target_pseudonym_columns (relation, column_name, kind, recoverable)
       SELECT $1::text::regclass, c.column_name, c.kind, c.recoverable FROM unnest($2::name[], $3::text[], $4::boolean[]) AS c(column_name, kind, recoverable)`,
      [relation, plan.register.map((p) => p.column), plan.register.map((p) => p.kind), plan.register.map((p) => p.recoverable)],
    );
  }
  const g = await client.query<{ grant: boolean; granted: boolean }>(
    `SELECT has_table_privilege($1::text::regclass, 'SELECT WITH GRANT OPTION') AS grant, has_table_privilege('masq_analyst', $1::text::regclass, 'SELECT') AS granted`,
    [relation],
  );
  const { grant, granted } = g.rows[0]!;
  if (granted) return;
  if (grant) await client.query(`GRANT SELECT ON TABLE ${relation} TO masq_analyst`);
  else logger.warn({ table: relation }, `cannot grant SELECT on ${relation} to masq_analyst: grant it as the table's owner`);
}
