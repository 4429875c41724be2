import type pg from "pg";
import { qualified, type TableName } from "./table-name.ts";

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
    // Key rows by their non-secret columns; keys and vault values are written through migration 005's functions.
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
