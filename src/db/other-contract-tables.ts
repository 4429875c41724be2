import { sql } from "kysely";
import type pg from "pg";
import { masqQueries } from "./schema.ts";
import type { TableName } from "./tables.ts";

/**
 * The registered tables (masq.target_tables) that are neither one of `mine`, the tables of the contract a command was
 * given, nor a login table: `login` (MASQ_TABLE) or any table of the login's layout. Any such table was registered
 * for another contract (or by hand), so the database holds that contract's events too; a quarantine record does not
 * say which contract refused it (106_contract_tables.sql: `pseudonyms` only says that one did). As "schema.name", in
 * name order; table names are not PII.
 * The login's layout is masq.is_login_layout's test (106_contract_tables.sql; replay's masq_unmask may call it,
 * 107_replay_reads_login_layout.sql). Unlike masq.registered_tables(), a table that masq would refuse to act on is
 * listed too.
 */
export async function otherContractTables(pool: pg.Pool, mine: readonly TableName[], login: TableName): Promise<string[]> {
  const schemas = [...mine.map((t) => t.schema), login.schema];
  const names = [...mine.map((t) => t.name), login.name];
  const r = await sql<{ name: string }>`SELECT format('%I.%I', n.nspname, c.relname) AS name
    FROM masq.target_tables t JOIN pg_class c ON c.oid = t.relation JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE (n.nspname::text, c.relname::text) NOT IN (SELECT * FROM unnest(${schemas}::text[], ${names}::text[]))
      AND masq.is_login_layout(t.relation) IS NOT TRUE
    ORDER BY 1`.execute(masqQueries(pool));
  return r.rows.map((t) => t.name);
}
