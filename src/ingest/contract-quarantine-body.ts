/**
 * What masq keeps of a body a contract refuses, besides its original (kept only encrypted, vault-sealer.ts): a redacted
 * copy and the record's facts. The copy follows the contract of the event type the body is: only `keep` fields in
 * clear, pseudonymised and hashed fields as "hmac:<pseudonym>" (the pseudonym a stored row would hold), every other
 * value as a marker of its type and length; with the bounds of login's copy (quarantine-body.ts). A body no event type
 * recognises keeps no value in clear.
 */
import { recognise } from "../contracts/apply-contract.ts";
import type { ContractKeys } from "../contracts/compile-contract.ts";
import type { FieldSpec } from "../contracts/contract.ts";
import type { ContractPlan, PlannedEvent, Shown, ShownTree } from "./contract-plan.ts";
import { canonicalizeIp } from "./login-event.ts";
import { NO_FACTS, redact, redactObject, REDACTION_LIMITS, type Budget, type QuarantineFacts } from "./quarantine-body.ts";

export interface ContractCopy {
  /** JSON text of the redacted copy; null for a body that is not JSON. */
  redactedBody: string | null;
  /** user_id: the subject's value when the copy keeps it in clear; pseudonyms: those the copy shows ("kind:pseudonym"). */
  facts: QuarantineFacts;
}

/** A body that is not JSON: no copy, no facts. Its original is sealed with the record. */
const NOTHING: ContractCopy = { redactedBody: null, facts: { ...NO_FACTS, pseudonyms: null } };

/**
 * The redacted copy and facts of a refused body. Total: any string gives a copy (or none), never an exception for a
 * body's content. Costs O(shown values) beyond the parse, and the copy is bounded as login's is (MAX_REDACTED_CHARS).
 */
export function contractQuarantineCopy(body: string, plan: ContractPlan, keys: ContractKeys): ContractCopy {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    return NOTHING;
  }
  const budget: Budget = { nodes: REDACTION_LIMITS.nodes };
  if (!isObject(json)) return { redactedBody: JSON.stringify(redact(json, 0, budget)), facts: NOTHING.facts };
  let event = json;
  let envelope: Record<string, unknown> | undefined;
  if (plan.compiled.unwrapsSns && json.Type === "Notification" && typeof json.Message === "string") {
    let inner: unknown;
    try {
      inner = JSON.parse(json.Message);
    } catch {
      inner = undefined;
    }
    if (!isObject(inner)) return { redactedBody: JSON.stringify(redact(json, 0, budget)), facts: NOTHING.facts };
    event = inner;
    envelope = json;
  }
  const type = recognise(plan.compiled, event);
  const planned = typeof type === "string" || (envelope !== undefined && type.envelope !== "sns") ? undefined : plan.events.get(type.name);
  if (planned === undefined) return { redactedBody: JSON.stringify(redact(json, 0, budget)), facts: NOTHING.facts };

  const found = new Set<string>();
  const depth = envelope === undefined ? 0 : 1;
  const copy = redactShown(event, planned.shown, depth, budget, keys, found);
  const redacted = envelope === undefined ? copy : redactEnvelope(envelope, copy, planned, budget, keys, found);
  return {
    redactedBody: JSON.stringify(redacted),
    facts: { userId: subjectOf(event, planned), maskedIp: null, maskedDeviceId: null, pseudonyms: found.size === 0 ? null : [...found] },
  };
}

/** An SNS notification: its Message as the event's copy, its MessageId and Timestamp as the contract shows them. */
function redactEnvelope(envelope: Record<string, unknown>, message: unknown, e: PlannedEvent, budget: Budget, keys: ContractKeys, found: Set<string>): Record<string, unknown> {
  return redactObject(envelope, 0, budget, (key, value) => {
    if (key === "Message") return message;
    const shown = e.snsShown.get(key);
    return shown === undefined ? undefined : showLeaf(shown, value, keys, found);
  });
}

/** An object of the event: each key by the contract's tree; a key the contract does not name as any other value. */
function redactShown(obj: Record<string, unknown>, tree: ShownTree, depth: number, budget: Budget, keys: ContractKeys, found: Set<string>): unknown {
  if (depth >= REDACTION_LIMITS.depth) return redact(obj, depth, budget);
  return redactObject(obj, depth, budget, (key, value) => {
    const node = tree.get(key);
    if (node === undefined) return undefined;
    if (node instanceof Map) return isObject(value) ? redactShown(value, node, depth + 1, budget, keys, found) : undefined;
    return showLeaf(node, value, keys, found);
  });
}

/**
 * A declared field's value in the copy: in clear when kept and of its declared JSON type and length; as the pseudonym
 * its row would hold when pseudonymised or hashed (recorded in `found`); undefined (the generic marker) otherwise.
 */
function showLeaf(shown: Shown, value: unknown, keys: ContractKeys, found: Set<string>): unknown {
  if (shown.as === "redacted") return undefined;
  const text = textOf(shown.field, value);
  if (text === undefined) return undefined;
  if (shown.as === "clear") return value;
  const input = shown.field.type === "ip" ? (canonicalizeIp(text.trim()) ?? text) : text;
  const pseudonym = keys.pseudonymize(shown.kind, input);
  found.add(`${shown.kind}:${pseudonym}`);
  return `hmac:${pseudonym}`;
}

/**
 * The value's text when it has the field's JSON type and fits its length (a string field's max_length; 64 characters
 * for a timestamp or version, which have none), else undefined: the copy then shows it as any other value.
 */
function textOf(f: FieldSpec, value: unknown): string | undefined {
  switch (f.type) {
    case "integer":
      return typeof value === "number" && Number.isSafeInteger(value) ? String(value) : undefined;
    case "boolean":
      return typeof value === "boolean" ? String(value) : undefined;
    case "object":
      return undefined;
    default:
      return typeof value === "string" && value.length <= (f.maxLength ?? 64) ? value : undefined;
  }
}

/**
 * The subject's value when the copy keeps it in clear (a kept string or integer field), as text Postgres stores
 * (no NUL, no lone surrogate; not empty): quarantine.user_id, by which subject export and erasure find the record.
 */
function subjectOf(event: Record<string, unknown>, e: PlannedEvent): string | null {
  if (e.subject === undefined) return null;
  let v: unknown = event;
  for (const s of e.subject.path.split(".")) {
    if (!isObject(v) || !Object.hasOwn(v, s)) return null;
    v = v[s];
  }
  const text = textOf(e.subject, v);
  if (text === undefined || text.trim() === "" || text.includes("\u0000") || !text.isWellFormed()) return null;
  return text;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
