import { sql } from "kysely";
import type pg from "pg";
import { masqQueries } from "./schema.ts";
import type { TableName } from "./tables.ts";

/**
 * The tables a subject's rows may be in: every table masq writes that the owner registered (`masq migrate`), in the
 * order they were registered, each with whether this login may read it. `masq subject erase` and `subject export` act
 * on all of them unless the command names one (--table or MASQ_TABLE): the vault is shared, and a user erased from one
 * table only would stay in the others.
 * Apart from tables.ts, which `masq run` loads at start: only the lifecycle commands, which load kysely anyway, read this.
 * A failure is pg's own error, as before: the command's catch-all classifies it naming its database (fromPostgres).
 */
export async function registeredTables(pool: pg.Pool): Promise<(TableName & { readable: boolean })[]> {
  const r = await sql<{ schema_name: string; table_name: string; readable: boolean }>`SELECT schema_name, table_name, readable FROM masq.registered_tables()`.execute(masqQueries(pool));
  return r.rows.map((t) => ({ schema: t.schema_name, name: t.table_name, readable: t.readable }));
}
