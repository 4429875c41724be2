/**
 * How a contract table's registration (masq.target_tables, masq.target_pseudonym_columns; 106_contract_tables.sql)
 * differs from what the contract writes to it. The lifecycle commands (erase, export, prune's values_in_use) find a
 * table's rows and vault values only through its registration: a table `run` wrote that is not registered, or whose
 * pseudonym columns are not registered as the contract writes them, would be skipped by an erasure and would let a
 * prune delete vault values its rows still use. Pure: verify-contract-tables.ts reads the registry.
 */
import type { PlannedTable } from "../ingest/contract-plan.ts";

/** A table's registration as the registry holds it; undefined when the table is not registered. */
export interface Registration {
  subjectColumn: string;
  pseudonyms: { column: string; kind: string; recoverable: boolean }[];
}

/**
 * What differs (a phrase for one line naming the table), or undefined when the registration fits: the table is
 * registered, with the contract's subject column, and each pseudonymised (recoverable) or hashed column of the
 * contract registered with its kind and treatment. Registered columns the contract no longer writes are fine:
 * migrate keeps old columns, and their registration keeps their values in the lifecycle.
 */
export function registrationMismatch(table: PlannedTable, registered: Registration | undefined): string | undefined {
  if (registered === undefined) return "is not registered for the lifecycle commands";
  if (registered.subjectColumn !== table.subjectColumn) {
    return `is registered with subject column ${registered.subjectColumn}, the contract's subject writes ${table.subjectColumn}`;
  }
  for (const c of table.columns) {
    if (c.hmacKind === undefined) continue;
    const recoverable = c.vaultKind !== undefined;
    const r = registered.pseudonyms.find((p) => p.column === c.name);
    if (r === undefined) return `has column ${c.name} (field ${c.path}) not registered as a pseudonym column of kind ${c.hmacKind} (${treatment(recoverable)})`;
    if (r.kind !== c.hmacKind || r.recoverable !== recoverable) {
      return `has column ${c.name} registered as kind ${r.kind} (${treatment(r.recoverable)}), the contract makes it kind ${c.hmacKind} (${treatment(recoverable)}) (field ${c.path})`;
    }
  }
  // A column registered as a pseudonym column that the contract now writes in clear: its clear values would be
  // looked up (and exported) as pseudonyms.
  for (const r of registered.pseudonyms) {
    const c = table.columns.find((x) => x.name === r.column);
    if (c !== undefined && c.hmacKind === undefined) return `has column ${r.column} registered as a pseudonym column of kind ${r.kind}, the contract writes it in clear (field ${c.path})`;
  }
  return undefined;
}

function treatment(recoverable: boolean): string {
  return recoverable ? "pseudonymize" : "hash";
}
