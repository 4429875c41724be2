import { LIMITS } from "./login-event.ts";
import type { Pseudonymizer } from "./pseudonymize.ts";
import { topLevelPseudonym } from "./redact-body.ts";

/**
 * What a quarantine record is about, as the database keeps it (masq.quarantine.user_id, masked_ip,
 * masked_device_id; migration 011): the user it names and the pseudonyms of the PII values it holds. Decided here,
 * from what the parser parsed, never by SQL from the stored copy: subject export and erasure find a user's records
 * by these, and erasure and retention decide by them whether a vault value is still used.
 */
export interface QuarantineFacts {
  userId: string | null;
  maskedIp: string | null;
  maskedDeviceId: string | null;
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
