import type pg from "pg";
import { qualified, type TableName } from "./table-name.ts";

/**
 * What the ingest path (`masq run`) does in Postgres, as privileges of the login it runs as (SECURITY.md, the
 * masq_ingest role). `masq check` asks Postgres for each; this list is the one place to change when the ingest
 * path changes what it writes (for example definer functions instead of table grants).
 */
export function ingestNeeds(t: TableName): { object: string; kind: "table" | "function" | "schema"; privilege: string }[] {
  return [
    { object: "masq", kind: "schema", privilege: "USAGE" },
    { object: qualified(t), kind: "table", privilege: "INSERT" },
    { object: "masq.ingest_ledger", kind: "table", privilege: "SELECT" },
    { object: "masq.ingest_ledger", kind: "table", privilege: "INSERT" },
    { object: "masq.ingest_ledger", kind: "table", privilege: "DELETE" },
    { object: "masq.quarantine", kind: "table", privilege: "INSERT" },
    { object: "masq.vault", kind: "table", privilege: "INSERT" },
    { object: "masq.data_keys", kind: "table", privilege: "INSERT" },
    { object: "masq.pseudonym_keys", kind: "table", privilege: "SELECT" },
    { object: "masq.lock_pseudonym_key(integer)", kind: "function", privilege: "EXECUTE" },
  ];
}

/** The privileges of ingestNeeds() that the current login lacks, as "INSERT on masq.vault"; one query. */
export async function missingIngestPrivileges(pool: pg.Pool, t: TableName): Promise<string[]> {
  const needs = ingestNeeds(t);
  const { rows } = await pool.query<{ ok: boolean[] }>(
    `SELECT array_agg(CASE n.kind
                        WHEN 'table' THEN has_table_privilege(n.object, n.privilege)
                        WHEN 'function' THEN has_function_privilege(n.object, n.privilege)
                        ELSE has_schema_privilege(n.object, n.privilege) END ORDER BY n.i) AS ok
     FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS n(object, kind, privilege, i)`,
    [needs.map((n) => n.object), needs.map((n) => n.kind), needs.map((n) => n.privilege)],
  );
  const ok = rows[0]?.ok ?? [];
  return needs.filter((_, i) => ok[i] !== true).map((n) => `${n.privilege} on ${n.object}`);
}
