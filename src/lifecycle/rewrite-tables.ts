import { sql } from "kysely";
import type pg from "pg";
import { watchedQuery } from "../db/lock-watch.ts";
import { classified } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";
import { registeredTables } from "../db/registered-tables.ts";
import { parseTableName, qualified, type TableName } from "../db/tables.ts";
import { ConfigError } from "../errors.ts";
import type { PassContext } from "./audited-command.ts";
import type { RotationState } from "./rotation-state.ts";

/**
 * The table pass of a pseudonym key rotation: which tables it rewrites (the one named, then every registered one),
 * the checks that each can be walked by blocks, and the block-by-block rewrite through the rotation map.
 */

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
 * The table pass over every table of rotationTables, one after another, each resumable by its blocks (rewriteTable):
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
  await classified(
    masqQueries(pool)
      .updateTable("masq.pseudonym_rotation")
      .set({ target_table: table, table_blocks: null, table_block_done: "0", table_relfilenode: null })
      .where("from_version", "=", state.fromVersion)
      .execute(),
  );
  Object.assign(state, { targetTable: table, tableBlocks: null, tableBlockDone: 0, tableRelfilenode: null });
}

async function finishTable(pool: pg.Pool, state: RotationState): Promise<void> {
  await classified(
    masqQueries(pool)
      .updateTable("masq.pseudonym_rotation")
      .set({ tables_done: sql`array_append(tables_done, target_table)` })
      .where("from_version", "=", state.fromVersion)
      .where(sql<boolean>`NOT (target_table = ANY (tables_done))`)
      .execute(),
  );
  if (!state.tablesDone.includes(state.targetTable)) state.tablesDone.push(state.targetTable);
}

async function exists(pool: pg.Pool, table: TableName): Promise<boolean> {
  const { rows } = await classified(sql<{ oid: string | null }>`SELECT to_regclass(${qualified(table)})::oid AS oid`.execute(masqQueries(pool)));
  return rows[0]?.oid !== null && rows[0]?.oid !== undefined;
}

// One table's pass, by ranges of its blocks.

/** Rows per block when Postgres has no statistics yet: about what a user_logins row of pseudonyms takes. */
const ROWS_PER_BLOCK_GUESS = 40;

/**
 * The pseudonym columns the table pass rewrites, by kind: the table's recoverable columns as registered
 * (masq.target_pseudonym_columns); for a table named but not registered, the login's. A hash column (recoverable
 * false) is left as it is: the vault holds no original of it, so the rotation map has no new pseudonym for it, and its
 * values stay under the old key (they still group rows, and match no pseudonym the new key makes).
 */
async function rotatedColumns(pool: pg.Pool, name: string): Promise<{ column: string; kind: string }[]> {
  const { rows } = await classified(
    sql<{ column: string; kind: string; registered: boolean }>`SELECT c.column_name::text AS column, c.kind, true AS registered
       FROM masq.target_pseudonym_columns c WHERE c.relation = ${name}::regclass AND c.recoverable
       UNION ALL SELECT NULL, NULL, EXISTS (SELECT 1 FROM masq.target_tables t WHERE t.relation = ${name}::regclass)
       ORDER BY 1`.execute(masqQueries(pool)),
  );
  if (rows.some((r) => r.column === null && r.registered)) return rows.filter((r) => r.column !== null);
  return [
    { column: "masked_ip", kind: "ip" },
    { column: "masked_device_id", kind: "device_id" },
  ];
}

/**
 * The table pass over one table (rewriteTables takes every registered table in turn): every row's pseudonyms under the
 * old key, in each of its recoverable columns (rotatedColumns), get the new key's, from the rotation map by the
 * column's kind. The user's table has no key and no index, so it is walked in physical order, a range of blocks
 * per transaction (a TID range scan, Postgres 14+), with the last block done kept in masq.pseudonym_rotation.
 *
 * Only the blocks that existed when the pass began are walked: rows appended later were written under the new key
 * (the switch came first). Every column changes in one UPDATE, so a row that the update moves to a later block is
 * complete, and meets no map entry when that block's turn comes. A rewrite of the table (VACUUM FULL, CLUSTER)
 * changes its file and scatters the rows: the pass then starts over, which is harmless, only slower.
 * Returns false when stopped by the signal before the end.
 */
export async function rewriteTable(ctx: PassContext, table: TableName): Promise<boolean> {
  const { pool, state } = ctx;
  const db = masqQueries(pool);
  const name = qualified(table);
  // The map was filled by the vault pass: fresh statistics let the planner look each pseudonym up by its key
  // instead of hashing the whole map for every chunk.
  await classified(sql`ANALYZE masq.pseudonym_rotation_map`.execute(db));
  const columns = await rotatedColumns(pool, name);
  if (columns.length === 0) return true;
  const newOf = (c: { column: string; kind: string }) => sql`(SELECT m.new_pseudonym FROM masq.pseudonym_rotation_map m WHERE m.kind = ${c.kind} AND m.old_pseudonym = t.${sql.id(c.column)})`;
  const sets = sql.join(columns.map((c) => sql`${sql.id(c.column)} = coalesce(${newOf(c)}, t.${sql.id(c.column)})`), sql`, `);
  const mapped = sql.join(columns.map((c) => sql`EXISTS ${newOf(c)}`), sql` OR `);
  for (;;) {
    let shape = await tableShape(pool, name);
    if (state.tableBlocks === null || state.tableRelfilenode !== shape.filenode) {
      await classified(
        db
          .updateTable("masq.pseudonym_rotation")
          .set({ table_blocks: String(shape.blocks), table_relfilenode: shape.filenode, table_block_done: "0" })
          .where("from_version", "=", state.fromVersion)
          .execute(),
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
      const batch = sql<{ n: number }>`WITH updated AS (
           UPDATE ${sql.id(table.schema, table.name)} t SET ${sets}
           WHERE t.ctid >= ${`(${from},0)`}::tid AND t.ctid < ${`(${to},0)`}::tid AND (${mapped})
           RETURNING 1
         )
         UPDATE masq.pseudonym_rotation SET table_block_done = ${to}, table_rows_done = table_rows_done + (SELECT count(*) FROM updated)
         WHERE from_version = ${state.fromVersion} AND table_relfilenode = ${state.tableRelfilenode}
         RETURNING (SELECT count(*) FROM updated)::int AS n`.compile(db);
      const r = await watchedQuery<{ n: number }>(pool, { what: `a row of ${name} the rotation rewrites`, onEnded: ctx.onBlockerEnded }, batch.sql, [...batch.parameters]);
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
  const { rows } = await classified(sql<{ relkind: string }>`SELECT c.relkind FROM pg_class c WHERE c.oid = ${name}::regclass`.execute(masqQueries(pool)));
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
  const db = masqQueries(pool);
  const has = await classified(sql<{ ok: boolean }>`SELECT to_regprocedure('masq.target_refusal(regclass)') IS NOT NULL AS ok`.execute(db));
  if (has.rows[0]?.ok !== true) return;
  const refused = await classified(sql<{ why: string | null }>`SELECT masq.target_refusal(${name}::regclass) AS why`.execute(db));
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
  const { rows } = await classified(
    sql<{ filenode: number; blocks: string; rows_per_block: number | null }>`SELECT pg_relation_filenode(c.oid)::int8 AS filenode,
            pg_relation_size(c.oid) / current_setting('block_size')::int AS blocks,
            CASE WHEN c.relpages > 0 AND c.reltuples > 0 THEN c.reltuples / c.relpages END AS rows_per_block
     FROM pg_class c WHERE c.oid = ${name}::regclass`.execute(masqQueries(pool)),
  );
  const r = rows[0]!;
  return { filenode: Number(r.filenode), blocks: Number(r.blocks), rowsPerBlock: Math.max(1, r.rows_per_block === null ? ROWS_PER_BLOCK_GUESS : Number(r.rows_per_block)) };
}
