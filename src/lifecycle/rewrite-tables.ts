import type pg from "pg";
import { registeredTables } from "../sink/registered-tables.ts";
import { parseTableName, qualified, type TableName } from "../sink/table-name.ts";
import type { PassContext } from "./pass-context.ts";
import { query } from "../db/query.ts";
import { assertRewritable, rewriteTable } from "./rewrite-table.ts";
import type { RotationState } from "./rotation-state.ts";

/** A table the table pass rewrites: as masq.pseudonym_rotation names it (schema.name), and as a name for SQL. */
export interface RotationTable {
  text: string;
  table: TableName;
}

export const tableText = (t: TableName): string => `${t.schema}.${t.name}`;

/**
 * The tables a rotation must rewrite before the old key retires: the vault and the rotation map are shared by every
 * registered table (migration 011), and retirement empties the map, so a table left out would keep pseudonyms that
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
