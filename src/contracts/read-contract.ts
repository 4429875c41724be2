import { isMap, isScalar, LineCounter, parseDocument, type Node, type Pair, type YAMLMap } from "yaml";
import { parseTableName } from "../db/tables.ts";
import { FIELD_TYPES, MESSAGE_FIELDS, TREATMENTS, TREATMENTS_OF, type Contract, type EventSpec, type FieldSpec, type FieldType, type TreatmentName } from "./contract.ts";

/** A mistake in a contract file, where it is (1-based line and column), as `vector validate` reports them. */
export interface ContractError {
  line: number;
  col: number;
  message: string;
}

export type ReadResult = { contract: Contract; errors: [] } | { contract: undefined; errors: ContractError[] };

const IDENT = /^[a-z_][a-z0-9_]{0,62}$/;
const KIND = /^[a-z][a-z0-9_]{0,31}$/;
const SEGMENT = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;
/** Schemas that hold masq's own tables or Postgres's (pg_catalog, pg_toast, information_schema, …): never a contract's table. */
const RESERVED_SCHEMA = /^(masq|pg_.*|information_schema)$/;
const EVENT_KEYS = ["match", "envelope", "table", "subject", "unknown", "fields"];
const FIELD_KEYS = ["type", "required", "max_length", "treatment", "kind", "to", "ipv4_prefix", "ipv6_prefix", "bucket", "column"];

/**
 * Reads a contract from YAML text. Every error is reported, each with its line and column, not only the first: a
 * reviewer fixes a file in one pass. The result has a contract only when there is no error at all.
 */
export function readContract(text: string): ReadResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const errors: ContractError[] = [];
  const at = (node: Node | null | undefined, message: string, offset?: number) => {
    const pos = lineCounter.linePos(offset ?? node?.range?.[0] ?? 0);
    errors.push({ line: pos.line, col: pos.col, message });
  };
  for (const e of [...doc.errors, ...doc.warnings]) {
    const pos = lineCounter.linePos(e.pos[0]);
    errors.push({ line: pos.line, col: pos.col, message: yamlMessage(e.message) });
  }
  if (doc.errors.length > 0) return { contract: undefined, errors: sorted(errors) };

  const root = doc.contents;
  const events: EventSpec[] = [];
  if (!isMap(root)) at(root, "a contract is a mapping with version and events");
  else {
    checkKeys(root, ["version", "events"], "the contract", at);
    const version = root.get("version", true) as Node | undefined;
    if (version === undefined) at(root, "version is missing (write version: 1)");
    else if (!isScalar(version) || version.value !== 1) at(version, "version must be 1");
    const eventsNode = root.get("events", true) as Node | undefined;
    if (eventsNode === undefined) at(root, "events is missing");
    else if (!isMap(eventsNode) || eventsNode.items.length === 0) at(eventsNode, "events must map each event type's name to its definition");
    else for (const pair of eventsNode.items) events.push(readEvent(pair, at));
    checkAcrossEvents(events, eventsNode, at);
  }
  if (errors.length > 0) return { contract: undefined, errors: sorted(errors) };
  return { contract: { version: 1, events }, errors: [] };
}

export function formatContractError(file: string, e: ContractError): string {
  return `${file}:${e.line}:${e.col}: ${e.message}`;
}

type At = (node: Node | null | undefined, message: string, offset?: number) => void;

function readEvent(pair: Pair, at: At): EventSpec {
  const keyNode = pair.key as Node;
  const name = scalarText(keyNode);
  if (!IDENT.test(name)) at(keyNode, `event type name "${clip(name)}" must be lowercase letters, digits and _`);
  const node = pair.value as Node | null;
  const spec: EventSpec = { name, match: { all: true }, envelope: "none", table: "", subject: "", unknown: "quarantine", fields: [] };
  if (!isMap(node)) {
    at(node ?? keyNode, `event type ${name} must be a mapping`);
    return spec;
  }
  checkKeys(node, EVENT_KEYS, `event type ${name}`, at);
  const where = `event type ${name}`;

  const fieldsNode = node.get("fields", true) as Node | undefined;
  if (fieldsNode === undefined) at(keyNode, `${where}: fields is missing`);
  else if (!isMap(fieldsNode) || fieldsNode.items.length === 0) at(fieldsNode, `${where}: fields must map each field's path to its type and treatment`);
  else for (const f of fieldsNode.items) spec.fields.push(readField(f, where, at));
  const byPath = new Map(spec.fields.map((f) => [f.path, f]));

  spec.envelope = oneOfValue(node, keyNode, "envelope", ["none", "sns"], "none", where, at) as "none" | "sns";
  spec.unknown = oneOfValue(node, keyNode, "unknown", ["quarantine", "drop"], undefined, where, at) as "quarantine" | "drop";

  const table = node.get("table", true) as Node | undefined;
  if (table === undefined) at(keyNode, `${where}: table is missing`);
  else {
    spec.table = scalarText(table);
    try {
      const t = parseTableName(spec.table);
      // masq registers the table for its lifecycle (run as the schema owner) and grants analysts read access:
      // never one of masq's own tables or Postgres's catalogs.
      if (RESERVED_SCHEMA.test(t.schema)) at(table, `${where}: table ${clip(spec.table)} is in schema ${t.schema}, which holds masq's or Postgres's own tables; choose another schema`);
    } catch {
      at(table, `${where}: table must be "table" or "schema.table", lowercase letters, digits and _`);
    }
  }

  const subject = node.get("subject", true) as Node | undefined;
  if (subject === undefined) at(keyNode, `${where}: subject is missing (the field that says whom an event is about)`);
  else {
    spec.subject = scalarText(subject);
    const f = byPath.get(spec.subject);
    if (f === undefined) at(subject, `${where}: subject ${clip(spec.subject)} is not one of its fields`);
    // Kept in clear: subject export and erase find a subject's rows, and its quarantined events, by the value a
    // person asks about; a pseudonym or hash of it would match nothing, and the events' originals would never be erased.
    else if (f.treatment.name !== "keep") at(subject, `${where}: subject ${f.path} must be kept (treatment: keep): export and erasure find a subject by its value`);
    else if (f.type !== "string" && f.type !== "integer") at(subject, `${where}: subject ${f.path} must be a string or an integer field`);
  }

  const match = node.get("match", true) as Node | undefined;
  if (match === undefined) at(keyNode, `${where}: match is missing (all, or field and equals)`);
  else if (isScalar(match) && match.value === "all") spec.match = { all: true };
  else if (isMap(match)) {
    checkKeys(match, ["field", "equals"], `${where}: match`, at);
    const field = match.get("field", true) as Node | undefined;
    const equals = match.get("equals", true) as Node | undefined;
    if (field === undefined || equals === undefined) at(match, `${where}: match needs field and equals`);
    else {
      spec.match = { field: scalarText(field), equals: scalarText(equals) };
      const f = byPath.get(spec.match.field);
      if (f === undefined) at(field, `${where}: match field ${clip(spec.match.field)} is not one of its fields`);
      else if (f.type !== "string" || !f.required || f.path.startsWith("$")) at(field, `${where}: match field ${f.path} must be a required string field of the event`);
      if (!isScalar(equals) || typeof equals.value !== "string") at(equals, `${where}: match equals must be a string`);
    }
  } else at(match, `${where}: match must be all, or a mapping with field and equals`);

  for (const f of spec.fields) {
    const message = MESSAGE_FIELDS[f.path];
    if (message?.sns === true && spec.envelope !== "sns") at(fieldNode(fieldsNode, f.path), `${where}: field ${f.path} exists only with envelope: sns`);
  }
  checkColumns(spec, fieldsNode, at);
  checkNesting(spec, fieldsNode, at);
  checkCreateDate(spec, fieldsNode, at);
  return spec;
}

/**
 * create_date is what retention and subject export's --from/--to date rows by, as the login table's: where a contract
 * writes it, it is a day (a timestamp generalised to the day, usually $sent_at), never another value. A table without
 * it has undated rows: retention keeps what they use, and an export of it cannot be limited to dates.
 */
function checkCreateDate(spec: EventSpec, fieldsNode: Node | undefined, at: At): void {
  const f = spec.fields.find((x) => x.column === "create_date");
  if (f === undefined) return;
  if (f.type !== "timestamp" || f.treatment.name !== "generalize" || !("to" in f.treatment) || f.treatment.to !== "day" || !f.required) {
    at(fieldNode(fieldsNode, f.path), `event type ${spec.name}: column create_date must be a required timestamp generalized to the day (such as $sent_at), not field ${f.path}`);
  }
}

function readField(pair: Pair, where: string, at: At): FieldSpec {
  const keyNode = pair.key as Node;
  const path = scalarText(keyNode);
  // Until read, a field counts as kept: a mistake in it is reported once, not again by checks that use it.
  const field: FieldSpec = { path, type: "string", required: true, maxLength: undefined, treatment: { name: "keep" }, column: undefined };
  const message = MESSAGE_FIELDS[path];
  if (path.startsWith("$") ? message === undefined : !path.split(".").every((s) => SEGMENT.test(s))) {
    const known = Object.keys(MESSAGE_FIELDS).join(", ");
    at(keyNode, path.startsWith("$") ? `${where}: unknown message field ${clip(path)} (known: ${known})` : `${where}: field path ${clip(path)} must be names of letters, digits, _ and - joined by dots`);
  }
  const node = pair.value as Node | null;
  const fw = `${where}, field ${clip(path)}`;
  if (!isMap(node)) {
    at(node ?? keyNode, `${fw}: must be a mapping with type and treatment`);
    return field;
  }
  checkKeys(node, FIELD_KEYS, fw, at);
  const type = oneOfValue(node, keyNode, "type", FIELD_TYPES, undefined, fw, at) as FieldType | undefined;
  if (type !== undefined) field.type = type;
  if (message !== undefined && type !== undefined && type !== message.type) at(node.get("type", true), `${fw}: ${path} is a message field of type ${message.type}`);

  const required = node.get("required", true) as Node | undefined;
  if (required !== undefined) {
    if (!isScalar(required) || typeof required.value !== "boolean") at(required, `${fw}: required must be true or false`);
    else field.required = required.value;
  } else if (message !== undefined && message.sns) field.required = false;

  const maxLength = node.get("max_length", true) as Node | undefined;
  if (maxLength !== undefined) {
    if (type !== "string" && type !== "ip") at(maxLength, `${fw}: max_length applies to string and ip fields only`);
    else field.maxLength = positive(maxLength, `${fw}: max_length`, 10_485_760, at);
  } else if (type === "string" && message === undefined) at(keyNode, `${fw}: a string field needs max_length`);

  const treatmentNode = node.get("treatment", true) as Node | undefined;
  const name = oneOfValue(node, keyNode, "treatment", TREATMENTS, undefined, fw, at) as TreatmentName | undefined;
  if (name !== undefined && type !== undefined && !TREATMENTS_OF[type].includes(name)) {
    at(treatmentNode, `${fw}: a ${type} field can be ${TREATMENTS_OF[type].join(", ")}, not ${name}`);
  }
  const params = new Set(FIELD_KEYS.slice(4, 9).filter((k) => node.has(k)));
  const allow = (...keys: string[]) => {
    for (const k of params) if (!keys.includes(k)) at(keyOf(node, k), `${fw}: ${k} does not apply to ${name ?? "this treatment"}${name === "generalize" ? ` of a ${type}` : ""}`);
  };
  if (name === "pseudonymize" || name === "hash") {
    allow("kind");
    const kind = node.get("kind", true) as Node | undefined;
    if (kind === undefined) at(keyNode, `${fw}: ${name} needs a kind (its pseudonyms' domain, e.g. ip or email)`);
    else if (!KIND.test(scalarText(kind))) at(kind, `${fw}: kind must be lowercase letters, digits and _, at most 32`);
    field.treatment = { name, kind: kind === undefined ? "" : scalarText(kind) };
  } else if (name === "generalize") {
    if (type === "ip") {
      allow("ipv4_prefix", "ipv6_prefix");
      const v4 = node.get("ipv4_prefix", true) as Node | undefined;
      const v6 = node.get("ipv6_prefix", true) as Node | undefined;
      field.treatment = { name, ipv4Prefix: v4 === undefined ? 24 : positive(v4, `${fw}: ipv4_prefix`, 32, at), ipv6Prefix: v6 === undefined ? 48 : positive(v6, `${fw}: ipv6_prefix`, 128, at) };
    } else if (type === "timestamp") {
      allow("to");
      const to = oneOfValue(node, keyNode, "to", ["hour", "day"], undefined, fw, at) as "hour" | "day" | undefined;
      field.treatment = { name, to: to ?? "day" };
    } else if (type === "integer") {
      allow("bucket");
      const bucket = node.get("bucket", true) as Node | undefined;
      if (bucket === undefined) at(keyNode, `${fw}: generalize of an integer needs bucket (the width of each range)`);
      field.treatment = { name, bucket: bucket === undefined ? 1 : positive(bucket, `${fw}: bucket`, Number.MAX_SAFE_INTEGER, at) };
    }
  } else if (name !== undefined) {
    allow();
    field.treatment = { name };
  }

  const column = node.get("column", true) as Node | undefined;
  if (name === "drop") {
    if (column !== undefined) at(column, `${fw}: a dropped field has no column`);
  } else if (column === undefined) {
    if (name !== undefined) at(keyNode, `${fw}: column is missing (the target table's column for it)`);
  } else {
    field.column = scalarText(column);
    if (!IDENT.test(field.column)) at(column, `${fw}: column must be lowercase letters, digits and _`);
  }
  return field;
}

/** Two fields in one column, or (across event types) one table whose columns disagree, are refused. */
function checkColumns(spec: EventSpec, fieldsNode: Node | undefined, at: At): void {
  const seen = new Map<string, string>();
  for (const f of spec.fields) {
    if (f.column === undefined) continue;
    const other = seen.get(f.column);
    if (other !== undefined) at(fieldNode(fieldsNode, f.path), `event type ${spec.name}: fields ${other} and ${f.path} both write column ${f.column}`);
    seen.set(f.column, f.path);
  }
}

/** A path may not be both a field and the parent of another ("card" and "card.last4"). */
function checkNesting(spec: EventSpec, fieldsNode: Node | undefined, at: At): void {
  const paths = new Set(spec.fields.map((f) => f.path));
  for (const f of spec.fields) {
    const segments = f.path.split(".");
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join(".");
      if (paths.has(parent)) at(fieldNode(fieldsNode, f.path), `event type ${spec.name}: ${f.path} is inside field ${parent}; declare one or the other`);
    }
  }
}

/**
 * A kind is one domain of pseudonyms: its values are either recoverable (pseudonymize, the vault keeps them) or not
 * (hash). The same kind both ways would make a hash equal to a pseudonym the vault holds, and `unmask` would reveal
 * it. ip and device_id are the login's, recoverable.
 */
function checkKinds(events: EventSpec[], eventsNode: Node | undefined, at: At): void {
  const treatment = new Map<string, string>([
    ["ip", "pseudonymize"],
    ["device_id", "pseudonymize"],
  ]);
  const where = new Map<string, string>([
    ["ip", "the login table's masked_ip"],
    ["device_id", "the login table's masked_device_id"],
  ]);
  for (const e of events) {
    for (const f of e.fields) {
      if ((f.treatment.name !== "pseudonymize" && f.treatment.name !== "hash") || f.treatment.kind === "") continue;
      const { kind } = f.treatment;
      const before = treatment.get(kind);
      if (before !== undefined && before !== f.treatment.name) {
        at(eventsNode, `event type ${e.name}, field ${f.path}: kind ${kind} is ${before === "hash" ? "hashed" : "pseudonymized"} in ${where.get(kind)}; one kind is either pseudonymized or hashed (choose another kind)`);
      } else if (before === undefined) {
        treatment.set(kind, f.treatment.name);
        where.set(kind, `event type ${e.name}, field ${f.path}`);
      }
    }
  }
}

function checkAcrossEvents(events: EventSpec[], eventsNode: Node | undefined, at: At): void {
  checkKinds(events, eventsNode, at);
  if (events.length > 1 && events.some((e) => "all" in e.match)) {
    at(eventsNode, "with more than one event type, each needs match: with field and equals (match: all takes every event)");
  }
  const seen = new Set<string>();
  for (const e of events) {
    if ("field" in e.match) {
      const key = `${e.match.field}=${e.match.equals}`;
      if (seen.has(key)) at(eventsNode, `event type ${e.name}: another event type already matches ${e.match.field} = ${clip(e.match.equals)}`);
      seen.add(key);
    }
  }
}

function checkKeys(map: YAMLMap, allowed: readonly string[], where: string, at: At): void {
  for (const pair of map.items) {
    const key = scalarText(pair.key as Node);
    if (!allowed.includes(key)) at(pair.key as Node, `${where}: unknown key ${clip(key)} (expected one of ${allowed.join(", ")})`);
  }
}

/** A key whose value is one of `values`; when it is missing, `fallback`, or an error at `owner` (the map's name). */
function oneOfValue(map: YAMLMap, owner: Node, key: string, values: readonly string[], fallback: string | undefined, where: string, at: At): string | undefined {
  const node = map.get(key, true) as Node | undefined;
  if (node === undefined) {
    if (fallback === undefined) at(owner, `${where}: ${key} is missing (one of ${values.join(", ")})`);
    return fallback;
  }
  const value = scalarText(node);
  if (!values.includes(value)) {
    at(node, `${where}: ${key} must be one of ${values.join(", ")}, not ${clip(value)}`);
    return undefined;
  }
  return value;
}

function positive(node: Node, where: string, max: number, at: At): number {
  if (!isScalar(node) || typeof node.value !== "number" || !Number.isInteger(node.value) || node.value < 1 || node.value > max) {
    at(node, `${where} must be a whole number from 1 to ${max}`);
    return 1;
  }
  return node.value;
}

function keyOf(map: YAMLMap, key: string): Node | undefined {
  return map.items.find((p) => scalarText(p.key as Node) === key)?.key as Node | undefined;
}

function fieldNode(fieldsNode: Node | undefined, path: string): Node | undefined {
  if (!isMap(fieldsNode)) return fieldsNode;
  return (fieldsNode.items.find((p) => scalarText(p.key as Node) === path)?.key as Node | undefined) ?? fieldsNode;
}

function scalarText(node: Node | null | undefined): string {
  const v: unknown = isScalar(node) ? node.value : undefined;
  return typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? String(v) : "";
}

function clip(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** yaml's messages end with "at line L, column C:" and a source excerpt; the position is reported separately. */
function yamlMessage(message: string): string {
  return message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "");
}

function sorted(errors: ContractError[]): ContractError[] {
  return errors.sort((a, b) => a.line - b.line || a.col - b.col);
}
