/**
 * What a contract asks of each table it writes: the columns with the SQL type each field's values need, the column
 * of the subject, and the columns that hold pseudonyms by kind; and, given what a table already has, what `masq
 * migrate` adds or must refuse. Pure: the statements that read and change the database are in contract-tables.ts.
 */
import { createHash } from "node:crypto";
import type { Contract, EventSpec, FieldSpec } from "./contract.ts";
import { parseTableName, qualified, quoteIdent, type TableName } from "../db/tables.ts";

/** What a field's column must be: the type masq creates it with, and the existing types its values fit in. */
export interface ColumnNeed {
  column: string;
  /** The field that writes it ("card.last4"), for the one line that names a mismatch. */
  field: string;
  /** The type masq creates the column with. */
  sql: string;
  /** information_schema.columns.data_type values that hold every value the field can have. */
  fits: readonly string[];
  /** For character varying: the shortest length that holds every value (an unbounded one always does). */
  minLength?: number;
}

/** A pseudonym column as masq.target_pseudonym_columns records it. */
export interface PseudonymColumn {
  column: string;
  kind: string;
  /** pseudonymize (the original is in the vault); false for hash. */
  recoverable: boolean;
}

/** One table a contract writes: what every event type that writes it needs, merged. */
export interface TableNeed {
  table: TableName;
  events: string[];
  subjectColumn: string;
  columns: ColumnNeed[];
  pseudonyms: PseudonymColumn[];
}

const TEXT = ["character varying", "text"] as const;
/** A pseudonym is 64 hex digits (HMAC-SHA256). */
const PSEUDONYM_LENGTH = 64;
/** The longest address or network an `ip` field stores: a full IPv6 address with an IPv4 tail and "/128". */
const IP_TEXT_LENGTH = 49;

/**
 * The column a stored field needs (undefined for a dropped field). Values are what apply-contract.ts stores: text for
 * pseudonyms, hashes and addresses (masq's canonical form, compared as text, as the login table's masked_ip), an ISO
 * time with zone for a kept or hour-cut timestamp, a UTC date for a day-cut one (as the login table's create_date).
 */
export function columnNeed(f: FieldSpec): ColumnNeed | undefined {
  if (f.column === undefined || f.treatment.name === "drop") return undefined;
  const base = { column: f.column, field: f.path };
  const t = f.treatment;
  if (t.name === "pseudonymize" || t.name === "hash") return { ...base, sql: "text", fits: TEXT, minLength: PSEUDONYM_LENGTH };
  switch (f.type) {
    case "string":
      return f.maxLength === undefined ? { ...base, sql: "text", fits: TEXT } : { ...base, sql: `varchar(${f.maxLength})`, fits: TEXT, minLength: f.maxLength };
    case "ip":
      return { ...base, sql: "text", fits: TEXT, minLength: IP_TEXT_LENGTH };
    case "integer":
      // Any safe integer (2^53): wider than integer.
      return { ...base, sql: "bigint", fits: ["bigint", "numeric"] };
    case "semver":
      // MAJOR·1,000,000 + MINOR·1,000 + PATCH ≤ 999,999,999: today's app_version column.
      return { ...base, sql: "integer", fits: ["integer", "bigint"] };
    case "boolean":
      return { ...base, sql: "boolean", fits: ["boolean"] };
    case "timestamp":
      return t.name === "generalize" && "to" in t && t.to === "day"
        ? { ...base, sql: "date", fits: ["date"] }
        : { ...base, sql: "timestamptz", fits: ["timestamp with time zone"] };
    case "object":
      return undefined;
  }
}

/** The pseudonym column a field writes, if it writes one. */
export function pseudonymColumn(f: FieldSpec): PseudonymColumn | undefined {
  const t = f.treatment;
  if (f.column === undefined || (t.name !== "pseudonymize" && t.name !== "hash")) return undefined;
  return { column: f.column, kind: t.kind, recoverable: t.name === "pseudonymize" };
}

/**
 * Every table of a contract with what it needs, in the contract's order. Event types that share a table must agree
 * on it (the same subject column, the same type and kind for a column both write); otherwise one line says where not.
 */
export function tableNeeds(contract: Contract): { tables: TableNeed[] } | { refusal: string } {
  const byTable = new Map<string, TableNeed>();
  for (const e of contract.events) {
    const table = parseTableName(e.table);
    const key = qualified(table);
    const need = eventNeed(e, table);
    const other = byTable.get(key);
    if (other === undefined) {
      byTable.set(key, need);
      continue;
    }
    const where = `event types ${other.events.join(", ")} and ${e.name} both write ${table.schema}.${table.name}`;
    if (other.subjectColumn !== need.subjectColumn) return { refusal: `${where} with different subject columns (${other.subjectColumn}, ${need.subjectColumn}); make them the same` };
    for (const c of need.columns) {
      const o = other.columns.find((x) => x.column === c.column);
      if (o === undefined) continue;
      if (o.sql !== c.sql) return { refusal: `${where}: column ${c.column} as ${o.sql} and as ${c.sql}; make the fields' types agree or use two columns` };
      const p = need.pseudonyms.find((x) => x.column === c.column);
      const q = other.pseudonyms.find((x) => x.column === c.column);
      if ((p === undefined) !== (q === undefined)) return { refusal: `${where}: column ${c.column} holds pseudonyms for one and values in clear for the other; use two columns` };
      if (p !== undefined && q !== undefined && (p.kind !== q.kind || p.recoverable !== q.recoverable)) {
        return { refusal: `${where}: column ${c.column} as ${describePseudonym(q)} and as ${describePseudonym(p)}; make them agree or use two columns` };
      }
    }
    other.columns.push(...need.columns.filter((c) => !other.columns.some((x) => x.column === c.column)));
    other.pseudonyms.push(...need.pseudonyms.filter((p) => !other.pseudonyms.some((x) => x.column === p.column)));
    other.events.push(e.name);
  }
  return { tables: [...byTable.values()] };
}

function eventNeed(e: EventSpec, table: TableName): TableNeed {
  const subject = e.fields.find((f) => f.path === e.subject);
  return {
    table,
    events: [e.name],
    // read-contract.ts refuses a subject that is not stored in a column.
    subjectColumn: subject?.column ?? "user_id",
    columns: e.fields.map(columnNeed).filter((c) => c !== undefined),
    pseudonyms: e.fields.map(pseudonymColumn).filter((p) => p !== undefined),
  };
}

/** A column as the table has it (information_schema.columns). */
export interface ColumnHave {
  column: string;
  dataType: string;
  maxLength: number | null;
}

export function columnFits(need: ColumnNeed, have: ColumnHave): boolean {
  if (!need.fits.includes(have.dataType)) return false;
  return have.dataType !== "character varying" || have.maxLength === null || have.maxLength >= (need.minLength ?? Infinity);
}

/** What the table is now, as contract-tables.ts reads it under the lock. */
export interface TableState {
  exists: boolean;
  columns: ColumnHave[];
  /** Registered for the lifecycle (masq.target_tables): its subject column and pseudonym columns. */
  registered: { subjectColumn: string; pseudonyms: PseudonymColumn[] } | undefined;
  /**
   * The lookups an index of the table already serves: "column" for a valid, non-partial btree index whose first key
   * is the column, "column::text" for one whose first key is the column cast to text. Empty for a new table.
   */
  indexedKeys: string[];
  /** Which of the names masq would give its indexes (indexName) a relation of the table's schema already has. */
  takenNames: string[];
}

/**
 * An index masq migrate --contract makes for the lifecycle's lookups (106_contract_tables.sql): on the subject column,
 * which erasure, subject export and unmask --user-id find a subject's rows by (masq.subject_sql: the column itself
 * when it is text or varchar, else cast to text, so the index is on that expression), and on each recoverable
 * pseudonym column, which masq.values_in_use looks values up in (x.column = ANY(…)) for vault prune, retention and
 * erasure. A hash column is never looked up by masq (no vault value; rotation walks the table by blocks), a date is
 * only a filter beside a pseudonym: neither gets an index, which would only slow the inserts.
 */
export interface IndexNeed {
  name: string;
  column: string;
  /** The lookup it serves, as TableState.indexedKeys says it: "column" or "column::text". */
  key: string;
  /** For the log and masq check: "subject" or "pseudonyms of kind email". */
  purpose: string;
  /** In migrate's transaction, for a table it creates (empty: instant). */
  sql: string;
  /** After that transaction, for a table that exists: built without blocking its readers and writers. */
  concurrently: string;
}

/** Postgres truncates a longer identifier (NAMEDATALEN - 1 bytes): masq's names never reach it. */
const MAX_IDENTIFIER_BYTES = 63;

/**
 * The name of masq's index on a column: "<table>_<column>_<8 hex>_idx", the readable part cut (at a character, to fit
 * 63 bytes) and the hex a digest of schema, table and column, so that two columns never share a name even when their
 * readable parts do ("a_b"."c" and "a"."b_c"), and the same column always has the same one.
 */
export function indexName(table: TableName, column: string): string {
  const digest = createHash("sha256").update(JSON.stringify([table.schema, table.name, column])).digest("hex").slice(0, 8);
  const suffix = `_${digest}_idx`;
  let readable = "";
  for (const ch of `${table.name}_${column}`) {
    if (Buffer.byteLength(readable + ch) + suffix.length > MAX_IDENTIFIER_BYTES) break;
    readable += ch;
  }
  return `${readable}${suffix}`;
}

/** The indexes the table needs for the lifecycle, given the SQL type of its subject column (as it is, or will be made). */
export function indexNeeds(need: TableNeed, subjectIsText: boolean): IndexNeed[] {
  const table = qualified(need.table);
  const subjectKey = subjectIsText ? need.subjectColumn : `${need.subjectColumn}::text`;
  const subjectExpr = subjectIsText ? quoteIdent(need.subjectColumn) : `(${quoteIdent(need.subjectColumn)}::text)`;
  const of = (column: string, key: string, expr: string, purpose: string): IndexNeed => {
    const name = indexName(need.table, column);
    return {
      name,
      column,
      key,
      purpose,
      sql: `CREATE INDEX IF NOT EXISTS ${quoteIdent(name)} ON ${table} (${expr})`,
      concurrently: `CREATE INDEX CONCURRENTLY IF NOT EXISTS ${quoteIdent(name)} ON ${table} (${expr})`,
    };
  };
  return [
    of(need.subjectColumn, subjectKey, subjectExpr, "subject"),
    ...need.pseudonyms.filter((p) => p.recoverable).map((p) => of(p.column, p.column, quoteIdent(p.column), `pseudonyms of kind ${p.kind}`)),
  ];
}

export interface TablePlan {
  /** CREATE TABLE or ALTER TABLE … ADD COLUMN statements, in order; empty when the table is as the contract needs. */
  ddl: string[];
  /** The columns added to an existing table. */
  added: string[];
  /** Columns of the table the contract does not write: kept, never dropped. */
  unused: string[];
  /** Pseudonym columns to register (all of them for a table not yet registered). */
  register: PseudonymColumn[];
  /** The lifecycle's indexes the table lacks, made after its columns (indexNeeds). */
  indexes: IndexNeed[];
}

/**
 * What `masq migrate` does to one table, or the one line saying why it will not: a column of a type the field's
 * values do not fit, or a registration the contract contradicts (another subject column, a pseudonym column whose
 * kind or treatment changed: the vault's values of the old kind would be orphaned). Never drops or retypes.
 */
export function planTable(need: TableNeed, state: TableState): TablePlan | { refusal: string } {
  const name = `${need.table.schema}.${need.table.name}`;
  const register = state.registered === undefined ? need.pseudonyms : need.pseudonyms.filter((p) => !state.registered!.pseudonyms.some((r) => r.column === p.column));
  if (!state.exists) {
    const columns = need.columns.map((c) => `    ${quoteIdent(c.column).padEnd(20)} ${c.sql}`).join(",\n");
    const indexes = missingIndexes(need, state, undefined);
    if ("refusal" in indexes) return indexes;
    return { ddl: [`CREATE TABLE ${qualified(need.table)}(\n${columns}\n)`], added: [], unused: [], register, indexes: indexes.indexes };
  }
  const have = new Map(state.columns.map((c) => [c.column, c]));
  const missing: ColumnNeed[] = [];
  for (const c of need.columns) {
    const h = have.get(c.column);
    if (h === undefined) missing.push(c);
    else if (!columnFits(c, h)) {
      return {
        refusal: `column ${name}.${c.column} is ${describeHave(h)}; field ${c.field} needs ${describeNeed(c)}: rename the column (or change it by hand) or give the field another column, then run masq migrate again`,
      };
    }
  }
  const reg = state.registered;
  if (reg !== undefined) {
    if (reg.subjectColumn !== need.subjectColumn) {
      return {
        refusal: `table ${name} is registered with subject column ${reg.subjectColumn}, the contract's subject writes ${need.subjectColumn}: keep the subject's column (an unregistered table's rows are no longer erased, and vault prune no longer keeps the values they use)`,
      };
    }
    for (const p of need.pseudonyms) {
      const r = reg.pseudonyms.find((x) => x.column === p.column);
      if (r !== undefined && (r.kind !== p.kind || r.recoverable !== p.recoverable)) {
        return {
          refusal: `column ${name}.${p.column} holds pseudonyms ${describePseudonym(r)}, the contract makes it ${describePseudonym(p)}: the values already stored would lose their kind; give the field a new column`,
        };
      }
      if (r === undefined && have.has(p.column)) {
        return { refusal: `column ${name}.${p.column} holds values in clear, the contract makes it ${describePseudonym(p)}: give the field a new column` };
      }
    }
    for (const r of reg.pseudonyms) {
      if (need.columns.some((c) => c.column === r.column) && !need.pseudonyms.some((p) => p.column === r.column)) {
        return { refusal: `column ${name}.${r.column} holds pseudonyms ${describePseudonym(r)}, the contract writes values in clear to it: give the field a new column` };
      }
    }
  }
  const indexes = missingIndexes(need, state, have.get(need.subjectColumn));
  if ("refusal" in indexes) return indexes;
  return {
    ddl: missing.map((c) => `ALTER TABLE ${qualified(need.table)} ADD COLUMN ${quoteIdent(c.column)} ${c.sql}`),
    added: missing.map((c) => c.column),
    unused: state.columns.map((c) => c.column).filter((c) => !need.columns.some((n) => n.column === c)),
    register,
    indexes: indexes.indexes,
  };
}

/**
 * The lifecycle's indexes no index of the table serves yet (one the owner made, under any name, counts), or a refusal
 * when masq's name for one is taken by another relation (IF NOT EXISTS would then skip it without a word).
 */
function missingIndexes(need: TableNeed, state: TableState, subjectHave: ColumnHave | undefined): { indexes: IndexNeed[] } | { refusal: string } {
  const subjectIsText = subjectHave !== undefined ? TEXT.some((t) => t === subjectHave.dataType) : (need.columns.find((c) => c.column === need.subjectColumn)?.fits.includes("text") ?? true);
  const indexes = indexNeeds(need, subjectIsText).filter((i) => !state.indexedKeys.includes(i.key));
  const taken = indexes.find((i) => state.takenNames.includes(i.name));
  if (taken !== undefined) {
    return {
      refusal: `index name ${need.table.schema}.${taken.name}, which masq gives the index on ${need.table.name}.${taken.column} (${taken.purpose}), is taken by another relation: rename that relation, or make an index on ${taken.column} yourself (CREATE INDEX CONCURRENTLY … ON ${qualified(need.table)} (${taken.key.endsWith("::text") ? `(${quoteIdent(taken.column)}::text)` : quoteIdent(taken.column)}))`,
    };
  }
  return { indexes };
}

function describePseudonym(p: PseudonymColumn): string {
  return `of kind ${p.kind} (${p.recoverable ? "pseudonymize" : "hash"})`;
}

function describeHave(h: ColumnHave): string {
  if (h.dataType === "character varying") return h.maxLength === null ? "varchar" : `varchar(${h.maxLength})`;
  return h.dataType;
}

function describeNeed(c: ColumnNeed): string {
  if (c.fits.includes("character varying")) return c.minLength === undefined ? "text or varchar" : `text or varchar(${c.minLength}) or longer`;
  return c.fits.join(" or ");
}
