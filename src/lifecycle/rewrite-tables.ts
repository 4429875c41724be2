import type pg from "pg";
import { watchedQuery } from "../db/lock-watch.ts";
import { query } from "../db/query.ts";
import { registeredTables, parseTableName, qualified, type TableName } from "../db/tables.ts";
import { ConfigError } from "../errors.ts";
import type { PassContext } from "./audited-command.ts";
import type { RotationState } from "./rotation-state.ts";

/** A table the table pass rewrites: as masq.pseudonym_rotation names it (schema.name), and as a name for SQL. */
export interface RotationTable {
  text: string;
  table: TableName;
}

export const tableText = (t: TableName): string => `${t.schema}.${t.name}`;

/**
 * The tables a rotation must rewrite before the old key retires: the vault and the rotation map are shared by every
 * registered table (104_lifecycle.sql), and retirement empties the map, so a table left out would keep pseudonyms that
 * match no vault value. The table the pass is on (at the switch: the one named, --table or MASQ_TABLE, registered or
 * not) comes first, then every registered table in the order of masq.registered_tables().
 */
export async function rotationTables(pool: pg.Pool, targetTable: string): Promise<RotationTable[]> {
  const registered = (await registeredTables(pool)).map(({ schema, name }) => ({ text: tableText({ schema, name }), table: { schema, name } }));
  const target = registered.find((t) => t.text === targetTable) ?? { text: targetTable, table: parseTableName(targetTable) };
  return [target, ...registered.filter((t) => t.text !== target.text)];
}

/** Before a rotation starts or resumes: every table still to rewrite can be walked by blocks (assertRewritable). */
export async function assertTablesRewritable(pool: pg.Pool, state: Pick<RotationState, "targetTable" | "tablesDone">): Promise<void> {
  for (const t of await rotationTables(pool, state.targetTable)) {
    if (!state.tablesDone.includes(t.text) && (await exists(pool, t.table))) await assertRewritable(pool, t.table);
  }
}

/**
 * The table pass over every table of rotationTables, one after another, each resumable by its blocks (rewrite-table.ts):
 * target_table is the table in progress, tables_done those finished. The list is read again after each table, so a
 * table registered while the rotation ran is rewritten too. Returns false when stopped by the signal before the end.
 */
export async function rewriteTables(ctx: PassContext, onTable?: (table: string) => void): Promise<boolean> {
  const { pool, state } = ctx;
  for (;;) {
    const left = (await rotationTables(pool, state.targetTable)).filter((t) => !state.tablesDone.includes(t.text));
    const next = left[0];
    if (next === undefined) return true;
    if (next.text !== state.targetTable) await moveToTable(pool, state, next.text);
    if (ctx.signal?.aborted) return false;
    onTable?.(next.text);
    // A table dropped during the rotation took its rows with it: nothing of it is left to rewrite.
    if ((await exists(pool, next.table)) && !(await rewriteTable(ctx, next.table))) return false;
    await finishTable(pool, state);
  }
}

/** The pass moves on: the block cursor starts again, on the next table. */
async function moveToTable(pool: pg.Pool, state: RotationState, table: string): Promise<void> {
  await query(
    pool,
    "UPDATE masq.pseudonym_rotation SET target_table = $2, table_blocks = NULL, table_block_done = 0, table_relfilenode = NULL WHERE from_version = $1",
    [state.fromVersion, table],
  );
  Object.assign(state, { targetTable: table, tableBlocks: null, tableBlockDone: 0, tableRelfilenode: null });
}

async function finishTable(pool: pg.Pool, state: RotationState): Promise<void> {
  await query(
    pool,
    "UPDATE masq.pseudonym_rotation SET tables_done = array_append(tables_done, target_table) WHERE from_version = $1 AND NOT (target_table = ANY (tables_done))",
    [state.fromVersion],
  );
  if (!state.tablesDone.includes(state.targetTable)) state.tablesDone.push(state.targetTable);
}

async function exists(pool: pg.Pool, table: TableName): Promise<boolean> {
  const { rows } = await query<{ oid: string | null }>(pool, "SELECT to_regclass($1)::oid AS oid", [qualified(table)]);
  return rows[0]?.oid !== null && rows[0]?.oid !== undefined;
}

/** Rows per block when Postgres has no statistics yet: about what a user_logins row of pseudonyms takes. */
const ROWS_PER_BLOCK_GUESS = 40;

/**
 * The table pass over one table (rewrite-tables.ts takes every registered table in turn): every row's masked_ip and masked_device_id under the old key get the new key's pseudonyms, from
 * the rotation map. The user's table has no key and no index, so it is walked in physical order, a range of blocks
 * per transaction (a TID range scan, Postgres 14+), with the last block done kept in masq.pseudonym_rotation.
 *
 * Only the blocks that existed when the pass began are walked: rows appended later were written under the new key
 * (the switch came first). Both columns change in one UPDATE, so a row that the update moves to a later block is
 * complete, and meets no map entry when that block's turn comes. A rewrite of the table (VACUUM FULL, CLUSTER)
 * changes its file and scatters the rows: the pass then starts over, which is harmless, only slower.
 * Returns false when stopped by the signal before the end.
 */
export async function rewriteTable(ctx: PassContext, table: TableName): Promise<boolean> {
  const { pool, state } = ctx;
  const name = qualified(table);
  // The map was filled by the vault pass: fresh statistics let the planner look each pseudonym up by its key
  // instead of hashing the whole map for every chunk.
  await query(pool, "ANALYZE masq.pseudonym_rotation_map");
  for (;;) {
    let shape = await tableShape(pool, name);
    if (state.tableBlocks === null || state.tableRelfilenode !== shape.filenode) {
      await query(
        pool,
        "UPDATE masq.pseudonym_rotation SET table_blocks = $2, table_relfilenode = $3, table_block_done = 0 WHERE from_version = $1",
        [state.fromVersion, shape.blocks, shape.filenode],
      );
      Object.assign(state, { tableBlocks: shape.blocks, tableRelfilenode: shape.filenode, tableBlockDone: 0 });
    }
    const total = state.tableBlocks!;
    const step = Math.max(1, Math.ceil(ctx.batchSize / shape.rowsPerBlock));
    ctx.onBatch?.(state.tableBlockDone, total);
    while (state.tableBlockDone < total) {
      if (ctx.signal?.aborted) return false;
      const from = state.tableBlockDone;
      const to = Math.min(total, from + step);
      const r = await watchedQuery<{ n: number }>(
        pool,
        { what: `a row of ${name} the rotation rewrites`, onEnded: ctx.onBlockerEnded },
        `WITH updated AS (
           UPDATE ${name} t SET
             masked_ip = coalesce((SELECT m.new_pseudonym FROM masq.pseudonym_rotation_map m WHERE m.kind = 'ip' AND m.old_pseudonym = t.masked_ip), t.masked_ip),
             masked_device_id = coalesce((SELECT m.new_pseudonym FROM masq.pseudonym_rotation_map m WHERE m.kind = 'device_id' AND m.old_pseudonym = t.masked_device_id), t.masked_device_id)
           WHERE t.ctid >= $2::tid AND t.ctid < $3::tid
             AND (EXISTS (SELECT 1 FROM masq.pseudonym_rotation_map m WHERE m.kind = 'ip' AND m.old_pseudonym = t.masked_ip)
               OR EXISTS (SELECT 1 FROM masq.pseudonym_rotation_map m WHERE m.kind = 'device_id' AND m.old_pseudonym = t.masked_device_id))
           RETURNING 1
         )
         UPDATE masq.pseudonym_rotation SET table_block_done = $4, table_rows_done = table_rows_done + (SELECT count(*) FROM updated)
         WHERE from_version = $1 AND table_relfilenode = $5
         RETURNING (SELECT count(*) FROM updated)::int AS n`,
        [state.fromVersion, `(${from},0)`, `(${to},0)`, to, state.tableRelfilenode],
      );
      state.tableBlockDone = to;
      state.tableRowsDone += r.rows[0]?.n ?? 0;
      ctx.onBatch?.(to, total);
    }
    // Rewritten while the pass ran: its block numbers no longer say where the old rows are.
    shape = await tableShape(pool, name);
    if (shape.filenode === state.tableRelfilenode) return true;
  }
}

/**
 * The table pass walks the table's blocks by ctid ranges, which only a plain table has: a partitioned table (or a
 * view) would be walked as empty and keep every old pseudonym. Checked before the switch, so nothing has started, and
 * again before each resume.
 */
export async function assertRewritable(pool: pg.Pool, table: TableName): Promise<void> {
  const name = qualified(table);
  const { rows } = await query<{ relkind: string }>(pool, "SELECT c.relkind FROM pg_class c WHERE c.oid = $1::regclass", [name]);
  const kind = rows[0]?.relkind;
  if (kind !== "r") {
    const what = kind === "p" ? "a partitioned table" : kind === "v" || kind === "m" ? "a view" : kind === "f" ? "a foreign table" : "not a plain table";
    throw new ConfigError("--table", `${name} is ${what}; a pseudonym key rotation rewrites the table named and every registered table by their blocks, which only a plain table has, so nothing was started`);
  }
  await refuseForeignCode(pool, name);
}

/**
 * The rotation rewrites the table as the owner's login: the table's own code (triggers, rules, policies, or a table
 * another role owns) would run with its rights (masq.target_refusal, 102_ingest.sql). A rotation of an earlier masq's
 * database that lacks the function (not migrated yet) resumes without the check.
 */
async function refuseForeignCode(pool: pg.Pool, name: string): Promise<void> {
  const has = await query<{ ok: boolean }>(pool, "SELECT to_regprocedure('masq.target_refusal(regclass)') IS NOT NULL AS ok");
  if (has.rows[0]?.ok !== true) return;
  const refused = await query<{ why: string | null }>(pool, "SELECT masq.target_refusal($1::regclass) AS why", [name]);
  const why = refused.rows[0]?.why;
  if (why != null) throw new ConfigError("--table", `${why}; nothing was started`, { what: "a table masq does not rewrite" });
}

interface TableShape {
  filenode: number;
  /** Blocks in the table's main fork now (not pg_class.relpages, which only VACUUM and ANALYZE update). */
  blocks: number;
  rowsPerBlock: number;
}

async function tableShape(pool: pg.Pool, name: string): Promise<TableShape> {
  const { rows } = await query<{ filenode: number; blocks: string; rows_per_block: number | null }>(
    pool,
    `SELECT pg_relation_filenode(c.oid)::int8 AS filenode,
            pg_relation_size(c.oid) / current_setting('block_size')::int AS blocks,
            CASE WHEN c.relpages > 0 AND c.reltuples > 0 THEN c.reltuples / c.relpages END AS rows_per_block
     FROM pg_class c WHERE c.oid = $1::regclass`,
    [name],
  );
  const r = rows[0]!;
  return { filenode: Number(r.filenode), blocks: Number(r.blocks), rowsPerBlock: Math.max(1, r.rows_per_block === null ? ROWS_PER_BLOCK_GUESS : Number(r.rows_per_block)) };
}
