/**
 * What masq keeps of a body it refuses, besides its original, which is kept only encrypted (vault-sealer.ts): the facts
 * of the quarantine record (the user it names, the pseudonyms of its PII) and a redacted copy that is safe to store.
 * The facts are the copy's own: the user_id it keeps in clear and the pseudonyms it shows (topLevelPseudonym), so what
 * export and erasure find by column is what the copy shows.
 */
import { LIMITS, canonicalizeIp } from "./login-event.ts";
import type { Pseudonymizer, PiiKind } from "./pseudonymize.ts";

/**
 * What a quarantine record is about, as the database keeps it (masq.quarantine.user_id, masked_ip,
 * masked_device_id; 102_ingest.sql): the user it names and the pseudonyms of the PII values it holds. Decided here,
 * from what the parser parsed, never by SQL from the stored copy: subject export and erasure find a user's records
 * by these, and erasure and retention decide by them whether a vault value is still used.
 */
export interface QuarantineFacts {
  userId: string | null;
  maskedIp: string | null;
  maskedDeviceId: string | null;
  /** A record of a contract other than login's: the pseudonyms its copy shows, as "kind:pseudonym" (106_contract_tables.sql). */
  pseudonyms?: string[] | null;
}

export const NO_FACTS: QuarantineFacts = { userId: null, maskedIp: null, maskedDeviceId: null };

/**
 * The facts of a body that parsed as JSON: its top-level user_id when the redacted copy keeps it in clear (a string
 * of 1 to 128 characters, a number or a boolean), and the pseudonyms its copy shows for top-level ip and device_id.
 * Whatever other field holds (a NUL, a lone surrogate), the record is attributed.
 */
export function factsOfJson(json: unknown, p: Pseudonymizer): QuarantineFacts {
  if (json === null || typeof json !== "object" || Array.isArray(json)) return NO_FACTS;
  const obj = json as Record<string, unknown>;
  return {
    userId: userIdOf(obj.user_id),
    maskedIp: topLevelPseudonym("ip", obj.ip, p) ?? null,
    maskedDeviceId: topLevelPseudonym("device_id", obj.device_id, p) ?? null,
  };
}

/** A "user_id": "<string>" member, wherever it stands in a text that is not JSON (a cut-off body, say). */
const USER_ID_MEMBER = /"user_id"\s*:\s*("(?:[^"\\]|\\.){1,1024}")/g;

/**
 * The facts of a body that is not JSON: the user it names when it names exactly one (every "user_id": "<string>"
 * member in it agrees); no pseudonyms (it has no redacted copy, and its original is kept only encrypted, inside the
 * record, which goes with the record).
 */
export function factsOfText(body: string): QuarantineFacts {
  const named = new Set<string>();
  for (const m of body.matchAll(USER_ID_MEMBER)) {
    let value: unknown;
    try {
      value = JSON.parse(m[1]!);
    } catch {
      continue;
    }
    const id = userIdOf(value);
    if (id !== null) named.add(id);
    if (named.size > 1) return NO_FACTS;
  }
  return { ...NO_FACTS, userId: named.size === 1 ? [...named][0]! : null };
}

/**
 * A user id as the user's table could hold it: what the redacted copy keeps in clear, and text Postgres stores as
 * is (no NUL, no lone surrogate: neither could be in a row, so neither names a user whose data masq holds).
 */
function userIdOf(value: unknown): string | null {
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (typeof value !== "string" || value.length === 0 || value.length > LIMITS.userId) return null;
  if (value.includes("\u0000") || !value.isWellFormed()) return null;
  return value;
}

/**
 * Top-level fields of a login event whose values are kept in clear: they are not PII (the same values are stored in
 * clear in the user's table), and they are what a rejection's reason is about (an unparseable app_version, say).
 * A value is kept only when it is a string within the field's length limit, a number or a boolean.
 */
const KEPT: ReadonlyMap<string, number> = new Map([
  ["user_id", LIMITS.userId],
  ["device_type", LIMITS.deviceType],
  ["locale", LIMITS.locale],
  ["app_version", 32],
]);

/** Top-level fields that hold PII: their value is shown as its pseudonym, the same one a loaded row would get. */
const PSEUDONYMISED: ReadonlyMap<string, { kind: PiiKind; max: number }> = new Map([
  ["ip", { kind: "ip", max: LIMITS.ip }],
  ["device_id", { kind: "device_id", max: LIMITS.deviceId }],
]);

/**
 * What a redacted copy may hold, whatever the body: it exists to show an operator the shape of what was refused, so
 * the shape is cut short where a body is large or deep. These bound its size (MAX_REDACTED_CHARS) and the work.
 */
export const REDACTION_LIMITS = {
  /** Values and keys shown in all; past this, each container says how many more it had. */
  nodes: 200,
  /** Items of one array or keys of one object shown. */
  perContainer: 50,
  /** Containers nested deeper than this are shown as one marker ("[object: 3 keys]"). */
  depth: 8,
} as const;

/** An upper bound on the length of JSON.stringify(redactBody(…)), for any input (tested). */
export const MAX_REDACTED_CHARS = 64 * 1024;

/**
 * A key name is shown when it looks like a field name: ASCII letters, digits and "_", starting with a letter or "_",
 * at most 40 characters and 4 digits. Anything else (an address, an id used as a key, a key with invisible or
 * look-alike characters) is shown as "[key 3: 9 chars]", numbered so that keys stay distinct.
 */
const SHOWN_KEY = /^[A-Za-z_][A-Za-z0-9_]{0,39}$/;

export function showsKey(key: string): boolean {
  return SHOWN_KEY.test(key) && (key.match(/[0-9]/g)?.length ?? 0) <= 4;
}

/**
 * A copy of a rejected body that is safe to store, by allowlist: the values of user_id, device_type, locale and
 * app_version (top level) are kept; ip and device_id (top level) become "hmac:<pseudonym>"; every other value, at any
 * depth and under any key, becomes a marker of its type and length ("[string: 12 chars]", "[number: 10 chars]");
 * true, false and null stay (one bit says nothing about anyone). Keys are kept only when they look like field
 * names (see showsKey). The copy is bounded (MAX_REDACTED_CHARS) and costs O(shown values) beyond the parse, so a
 * hostile body cannot make it large or slow. The original is kept whole, encrypted (vault-sealer.ts).
 */
export function redactBody(json: unknown, p: Pseudonymizer): unknown {
  const budget = { nodes: REDACTION_LIMITS.nodes };
  if (json !== null && typeof json === "object" && !Array.isArray(json)) {
    return redactObject(json as Record<string, unknown>, 0, budget, (key, value) => topLevel(key, value, p));
  }
  return redact(json, 0, budget);
}

/** The allowlisted treatment of a top-level field, or undefined for the generic one. */
function topLevel(key: string, value: unknown, p: Pseudonymizer): unknown {
  const kept = KEPT.get(key);
  if (kept !== undefined) {
    if (typeof value === "number" || typeof value === "boolean") return value;
    if (typeof value === "string" && value.length <= kept) return value;
    return undefined;
  }
  const pseudonym = topLevelPseudonym(key, value, p);
  return pseudonym === undefined ? undefined : `hmac:${pseudonym}`;
}

/**
 * The pseudonym a top-level ip or device_id value is shown as in a redacted copy (the same one a loaded row would
 * get), or undefined when the copy shows it as any other value. The quarantine record's masked_ip and
 * masked_device_id hold exactly these (factsOfJson).
 */
export function topLevelPseudonym(key: string, value: unknown, p: Pseudonymizer): string | undefined {
  const pii = PSEUDONYMISED.get(key);
  if (pii === undefined || !(typeof value === "number" || (typeof value === "string" && value.length <= pii.max))) return undefined;
  const text = String(value);
  const canonical = pii.kind === "ip" ? (canonicalizeIp(text.trim()) ?? text) : text;
  return p.pseudonymize(pii.kind, canonical);
}

/** Values and keys a redacted copy may still show (REDACTION_LIMITS.nodes at the start). */
export interface Budget {
  nodes: number;
}

/** A value as any redacted copy shows one nobody allowed: a marker of its type and length, bounded (see redactBody). */
export function redact(value: unknown, depth: number, budget: Budget): unknown {
  budget.nodes--;
  if (value === null || typeof value === "boolean") return value;
  if (typeof value === "string") return `[string: ${value.length} chars]`;
  if (typeof value === "number") return `[number: ${String(value).length} chars]`;
  if (Array.isArray(value)) {
    if (depth >= REDACTION_LIMITS.depth) return `[array: ${value.length} items]`;
    const out: unknown[] = [];
    const shown = Math.min(value.length, REDACTION_LIMITS.perContainer);
    for (let i = 0; i < shown && budget.nodes > 0; i++) out.push(redact(value[i], depth + 1, budget));
    if (out.length < value.length) out.push(`[${value.length - out.length} more items]`);
    return out;
  }
  if (typeof value === "object") {
    if (depth >= REDACTION_LIMITS.depth) return `[object: ${Object.keys(value).length} keys]`;
    return redactObject(value as Record<string, unknown>, depth, budget, () => undefined);
  }
  // JSON.parse yields nothing else; anything else is shown by its type alone.
  return `[${typeof value}]`;
}

/**
 * An object's entries, bounded (REDACTION_LIMITS), each redacted unless `special` gives the value to show for its key.
 * Only a key that looks like a field name can be special (the login's and a contract's names all are); any other is
 * shown by its length. Shared by the login's copy and a contract's (contract-quarantine-body.ts).
 */
export function redactObject(obj: Record<string, unknown>, depth: number, budget: Budget, special: (key: string, value: unknown) => unknown): Record<string, unknown> {
  const keys = Object.keys(obj);
  const entries: [string, unknown][] = [];
  const shown = Math.min(keys.length, REDACTION_LIMITS.perContainer);
  for (let i = 0; i < shown && budget.nodes > 0; i++) {
    const key = keys[i]!;
    const value = obj[key];
    const name = showsKey(key) ? key : `[key ${i + 1}: ${key.length} chars]`;
    const allowed = name === key ? special(key, value) : undefined;
    if (allowed !== undefined) budget.nodes--;
    entries.push([name, allowed !== undefined ? allowed : redact(value, depth + 1, budget)]);
  }
  if (entries.length < keys.length) entries.push(["[more]", `${keys.length - entries.length} more keys`]);
  // fromEntries defines own properties, so a "__proto__" key in the body stays a key.
  return Object.fromEntries(entries);
}
