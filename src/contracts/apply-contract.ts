import { showsKey } from "../ingest/quarantine-body.ts";
import type { CompiledContract, CompiledEvent, CompiledField, ContractKeys, ContractReason, FieldTree, RowValue, VaultEntry } from "./compile-contract.ts";

/** A message as the source hands it over: its body and when SQS received it from the producer. */
export interface ContractMessage {
  body: string;
  sentAt: Date;
}

/** A stored row (column → value, no plain PII) and the vault entries of its pseudonyms, or why the event is refused. */
export type Applied =
  | { ok: true; event: string; table: string; row: Record<string, RowValue>; vault: VaultEntry[] }
  /** `path` names a field (a key that does not look like a field name is shown by its length), never a value. */
  | { ok: false; reason: ContractReason; path: string };

const refuse = (reason: ContractReason, path: string): Applied => ({ ok: false, reason, path });

/**
 * Applies a compiled contract to one message. Pure and total, fail-closed: a field its contract does not name refuses
 * the event (unclassified_field) unless the contract drops unknown fields; an event no type recognises is refused
 * (unknown_event). The checks run in phases (missing, type, empty, text, length, format), each over the fields in
 * the contract's order, so that the first problem found is the one today's login validation reports.
 */
export function applyContract(c: CompiledContract, message: ContractMessage, keys: ContractKeys): Applied {
  let json: unknown;
  try {
    json = JSON.parse(message.body);
  } catch {
    return refuse("invalid_json", "");
  }
  if (!isObject(json)) return refuse("not_an_object", "");
  let event = json;
  let sns: Record<string, unknown> | undefined;
  if (c.unwrapsSns && json.Type === "Notification" && typeof json.Message === "string") {
    try {
      event = JSON.parse(json.Message) as Record<string, unknown>;
    } catch {
      return refuse("invalid_json", "$sns.Message");
    }
    if (!isObject(event)) return refuse("not_an_object", "$sns.Message");
    sns = json;
  }
  const type = recognise(c, event);
  if (typeof type === "string") return refuse("unknown_event", type);
  if (sns !== undefined && type.envelope !== "sns") return refuse("unknown_event", "$sns.Message");
  return applyEvent(type, event, message.sentAt, sns, keys);
}

/** The event type of an event, or the path of the discriminator that matched none (a quarantined copy needs it too). */
export function recognise(c: CompiledContract, event: Record<string, unknown>): CompiledEvent | string {
  if (c.matchAll !== undefined) return c.matchAll;
  let path = "";
  for (const [field, d] of c.discriminators) {
    const value = valueAt(event, d.segments);
    const type = typeof value === "string" ? d.byValue.get(value) : undefined;
    if (type !== undefined) return type;
    path ||= field;
  }
  return path;
}

function applyEvent(e: CompiledEvent, event: Record<string, unknown>, sentAt: Date, sns: Record<string, unknown> | undefined, keys: ContractKeys): Applied {
  if (e.tree !== undefined) {
    const stray = unclassified(event, e.tree, "");
    if (stray !== undefined) return refuse(stray.reason, stray.path);
  }
  const values: unknown[] = e.fields.map((f) => (f.segments === undefined ? messageField(f.path, sentAt, sns) : valueAt(event, f.segments)));

  for (const f of e.requiredFields) if (values[f.index] == null) return refuse("missing_field", f.path);
  for (const f of e.fields) {
    const v = values[f.index];
    // An optional field absent, null, empty or blank is stored as null (today's locale).
    if (v == null || (typeof v === "string" && v.trim() === "" && !f.required)) values[f.index] = null;
    else if (!hasType(f, v)) return refuse("wrong_type", f.path);
  }
  for (const f of e.requiredFields) {
    const v = values[f.index];
    if (typeof v === "string" && v.trim() === "") return refuse("empty_field", f.path);
  }
  for (const f of e.textFields) {
    const v = values[f.index];
    // Postgres text cannot hold NUL; a lone surrogate becomes U+FFFD, so distinct values would share a pseudonym.
    if (typeof v === "string" && (v.includes("\u0000") || !v.isWellFormed())) return refuse("invalid_text", f.path);
  }
  for (const f of e.boundedFields) {
    const v = values[f.index];
    if (typeof v === "string" && longerThan(v, f.maxLength!)) return refuse("too_long", f.path);
  }
  for (const f of e.parsedFields) {
    const v = values[f.index];
    if (v === null) continue;
    const parsed = f.parse!(v);
    if (parsed === null) return refuse(f.invalid, f.path);
    values[f.index] = parsed;
  }
  const row: Record<string, RowValue> = {};
  const vault: VaultEntry[] = [];
  for (const f of e.storedFields) {
    const v = values[f.index] as Parameters<NonNullable<CompiledField["treat"]>>[0] | null;
    row[f.column!] = v === null ? null : f.treat!(v, keys, vault);
  }
  return { ok: true, event: e.name, table: e.table, row, vault };
}

function hasType(f: CompiledField, v: unknown): boolean {
  switch (f.type) {
    case "integer":
      return typeof v === "number" && Number.isSafeInteger(v);
    case "boolean":
      return typeof v === "boolean";
    case "object":
      return typeof v === "object";
    case "timestamp":
      return typeof v === "string" || v instanceof Date;
    default:
      return typeof v === "string";
  }
}

function messageField(path: string, sentAt: Date, sns: Record<string, unknown> | undefined): unknown {
  if (path === "$sent_at") return sentAt;
  return sns?.[path.slice("$sns.".length)];
}

function valueAt(event: Record<string, unknown>, segments: string[]): unknown {
  let v: unknown = event;
  for (const s of segments) {
    if (!isObject(v) || !Object.hasOwn(v, s)) return undefined;
    v = v[s];
  }
  return v;
}

/** The first key, at any depth, that the contract does not name; or a declared branch that is not an object. */
function unclassified(obj: Record<string, unknown>, tree: FieldTree, prefix: string): { reason: ContractReason; path: string } | undefined {
  const keys = Object.keys(obj);
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    const path = `${prefix}${shownKey(key, i)}`;
    const node = tree.get(key);
    if (node === undefined) return { reason: "unclassified_field", path };
    if (node === "leaf") continue;
    const value = obj[key];
    if (value == null) continue;
    if (!isObject(value)) return { reason: "wrong_type", path };
    const stray = unclassified(value, node, `${path}.`);
    if (stray !== undefined) return stray;
  }
  return undefined;
}

/** A key is named when it looks like a field name, as in a quarantined copy; else by its length. */
function shownKey(key: string, i: number): string {
  return showsKey(key) ? key : `[key ${i + 1}: ${key.length} chars]`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Length in characters as Postgres varchar counts them (code points, not UTF-16 units). */
function longerThan(value: string, max: number): boolean {
  if (value.length <= max) return false;
  let n = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < value.length) i++;
    if (++n > max) return true;
  }
  return false;
}
