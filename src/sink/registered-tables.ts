import type pg from "pg";
import type { TableName } from "./table-name.ts";

/**
 * The tables a subject's rows may be in: every table masq writes that the owner registered (`masq migrate`), in the
 * order they were registered, each with whether this login may read it. `masq subject erase` and `subject export` act on all of them unless the command names
 * one (--table or MASQ_TABLE): the vault is shared, and a user erased from one table only would stay in the others.
 */
export async function registeredTables(pool: pg.Pool): Promise<(TableName & { readable: boolean })[]> {
  const r = await pool.query<{ schema_name: string; table_name: string; readable: boolean }>("SELECT schema_name, table_name, readable FROM masq.registered_tables()");
  return r.rows.map((t) => ({ schema: t.schema_name, name: t.table_name, readable: t.readable }));
}

/** Whether the command names its table itself (--table, or MASQ_TABLE): then it acts on that one only. */
export function namesTable(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): boolean {
  return flags.table !== undefined || (env.MASQ_TABLE !== undefined && env.MASQ_TABLE !== "");
}
