/**
 * What `masq run` needs of a contract other than the shipped login contract, made once at start: the compiled
 * contract (applyContract), each event type's table with its columns and the type each column's values are sent as,
 * and what a quarantined body of each event type keeps in clear (contract-quarantine-body.ts). The batch statement
 * is generated from it once (write-contract-batch.ts). Nothing of the YAML is looked at per message.
 */
import { compileContract, type CompiledContract } from "../contracts/compile-contract.ts";
import type { Contract, EventSpec, FieldSpec } from "../contracts/contract.ts";
import { parseTableName, type TableName } from "../db/tables.ts";

/** The Postgres type a column's values are sent as (unnest of one array per column), by the field's type and treatment. */
export type SentType = "text" | "bigint" | "boolean" | "timestamptz" | "date" | "integer";

export interface PlannedColumn {
  name: string;
  /** The contract field that fills it. */
  path: string;
  sent: SentType;
  /** The kind of a pseudonymised column (its values are in the vault under it); undefined for every other treatment. */
  vaultKind: string | undefined;
  /** The kind of a pseudonymised or hashed column (it holds pseudonyms of that kind); undefined for every other. */
  hmacKind: string | undefined;
}

export interface PlannedTable {
  table: TableName;
  /** The event types writing it (one, usually). */
  events: string[];
  /** The column of the event types' subject field: what masq.target_tables.subject_column must say (verify-contract-tables.ts). */
  subjectColumn: string;
  /** Every column its event types write (an event type's row holds null in a column it has no field for). */
  columns: PlannedColumn[];
}

/** How a field shows in a quarantined body's redacted copy: in clear, as "hmac:<pseudonym>", or as any other value. */
export type Shown = { as: "clear"; field: FieldSpec } | { as: "hmac"; field: FieldSpec; kind: string } | { as: "redacted" };

/** A field path's names, as a tree: a leaf says how the field shows, a branch holds the fields below it. */
export type ShownTree = Map<string, ShownTree | Shown>;

export interface PlannedEvent {
  name: string;
  /** Index into ContractPlan.tables. */
  table: number;
  /** How each field of the event shows in a quarantined copy. */
  shown: ShownTree;
  /** How the envelope's own fields show ($sns.MessageId, $sns.Timestamp), by their name in the notification. */
  snsShown: Map<string, Shown>;
  /** The subject field, when a quarantined copy shows it in clear: quarantine.user_id is its value. */
  subject: FieldSpec | undefined;
}

export interface ContractPlan {
  /** The file it was read from, as named in logs. */
  file: string;
  compiled: CompiledContract;
  tables: PlannedTable[];
  events: Map<string, PlannedEvent>;
}

/** The type a stored field's values go to Postgres as; its column must have a type that takes it (contract-tables.ts). */
export function sentTypeOf(f: FieldSpec): SentType {
  const t = f.treatment;
  if (t.name === "pseudonymize" || t.name === "hash") return "text";
  switch (f.type) {
    case "integer":
      return "bigint";
    case "boolean":
      return "boolean";
    case "semver":
      return "integer";
    case "timestamp":
      // A day is a date, as login's create_date: a timestamptz at midnight would be midnight in the session's zone.
      return t.name === "generalize" && "to" in t && t.to === "day" ? "date" : "timestamptz";
    default:
      return "text";
  }
}

/** Plans a contract for ingestion. Throws an Error (one line) when two event types write one column differently. */
export function planContract(contract: Contract, file: string): ContractPlan {
  const tables: PlannedTable[] = [];
  const events = new Map<string, PlannedEvent>();
  for (const e of contract.events) {
    const table = parseTableName(e.table);
    const columns = columnsOf(e);
    // read-contract.ts refuses a subject that is not stored in a column.
    const subjectColumn = e.fields.find((f) => f.path === e.subject)?.column ?? "user_id";
    let index = tables.findIndex((t) => t.table.schema === table.schema && t.table.name === table.name);
    if (index < 0) index = tables.push({ table, events: [e.name], subjectColumn, columns }) - 1;
    else {
      // Event types sharing a table write the union of their columns (null where one has no such field), as
      // `masq migrate --contract` creates it; a column both write must be written alike.
      const other = tables[index]!;
      if (other.subjectColumn !== subjectColumn) {
        throw new Error(`event types ${other.events.join(", ")} and ${e.name} both write table ${e.table} with different subject columns (${other.subjectColumn}, ${subjectColumn}); make them the same`);
      }
      for (const c of columns) {
        const o = other.columns.find((x) => x.name === c.name);
        if (o === undefined) other.columns.push(c);
        else if (o.sent !== c.sent || o.vaultKind !== c.vaultKind || o.hmacKind !== c.hmacKind) {
          throw new Error(`event types ${other.events.join(", ")} and ${e.name} both write column ${c.name} of table ${e.table}, differently; make the fields agree or use two columns`);
        }
      }
      other.events.push(e.name);
    }
    events.set(e.name, { name: e.name, table: index, shown: shownTree(e), snsShown: snsShown(e), subject: shownSubject(e) });
  }
  return { file, compiled: compileContract(contract), tables, events };
}

/** The event type's stored fields in the order applyContract fills its row (storedFields: the contract's order). */
function columnsOf(e: EventSpec): PlannedColumn[] {
  return e.fields
    .filter((f) => f.treatment.name !== "drop" && f.column !== undefined)
    .map((f) => ({
      name: f.column!,
      path: f.path,
      sent: sentTypeOf(f),
      vaultKind: f.treatment.name === "pseudonymize" ? f.treatment.kind : undefined,
      hmacKind: f.treatment.name === "pseudonymize" || f.treatment.name === "hash" ? f.treatment.kind : undefined,
    }));
}

/** How a field shows in a redacted copy: kept fields in clear, pseudonymised and hashed ones as their HMAC, the rest not. */
function shownOf(f: FieldSpec): Shown {
  const t = f.treatment;
  if (t.name === "keep" && f.type !== "object") return { as: "clear", field: f };
  if (t.name === "pseudonymize" || t.name === "hash") return { as: "hmac", field: f, kind: t.kind };
  return { as: "redacted" };
}

function shownTree(e: EventSpec): ShownTree {
  const root: ShownTree = new Map();
  for (const f of e.fields) {
    if (f.path.startsWith("$")) continue;
    const segments = f.path.split(".");
    let node = root;
    segments.forEach((s, i) => {
      if (i === segments.length - 1) {
        node.set(s, shownOf(f));
        return;
      }
      const next = node.get(s);
      if (next instanceof Map) node = next;
      else {
        const branch: ShownTree = new Map();
        node.set(s, branch);
        node = branch;
      }
    });
  }
  return root;
}

function snsShown(e: EventSpec): Map<string, Shown> {
  const out = new Map<string, Shown>();
  for (const f of e.fields) if (f.path.startsWith("$sns.")) out.set(f.path.slice("$sns.".length), shownOf(f));
  return out;
}

function shownSubject(e: EventSpec): FieldSpec | undefined {
  const f = e.fields.find((x) => x.path === e.subject);
  return f !== undefined && f.treatment.name === "keep" && (f.type === "string" || f.type === "integer") ? f : undefined;
}
