import { encodeAppVersion } from "./app-version.ts";
import { canonicalizeIp } from "./ip.ts";

/** A login event that passed validation; ip is canonical, app_version encoded. Still holds raw PII. */
export interface LoginEvent {
  userId: string;
  deviceType: string;
  ip: string;
  deviceId: string;
  locale: string | null;
  appVersion: number;
}

/**
 * Why a message was quarantined. Stable codes: dashboards and `quarantine replay` select by them; the list checks a
 * filter the user gives (`--reason-code`).
 */
export const REASON_CODES = [
  "invalid_json",
  "not_an_object",
  "missing_field",
  "wrong_type",
  "too_long",
  "empty_field",
  "invalid_text",
  "invalid_ip",
  "invalid_app_version",
  "db_rejected",
  "unprocessable",
] as const;

export type ReasonCode = (typeof REASON_CODES)[number];

/** A message masq will not load, and why. `detail` names fields, never their values. */
export interface Rejection {
  reason: ReasonCode;
  detail: string;
}

export type ParseResult = { ok: true; event: LoginEvent; json: Record<string, unknown> } | { ok: false; rejection: Rejection; json: unknown };

export const LIMITS = { userId: 128, deviceType: 32, locale: 32, deviceId: 256, ip: 64 } as const;

const REQUIRED = ["user_id", "app_version", "device_type", "ip", "device_id"] as const;

/**
 * Parses and validates one message body. Pure and total: any string yields an event or a rejection.
 * `json` is the parsed body (when it parsed), so the quarantine can keep a redacted copy of it.
 */
export function parseLoginEvent(body: string): ParseResult {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    return reject("invalid_json", `body is not valid JSON (${body.length} characters)`, undefined);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return reject("not_an_object", `body is JSON ${Array.isArray(json) ? "array" : json === null ? "null" : typeof json}, not an object`, json);
  }
  const obj = json as Record<string, unknown>;
  const missing = REQUIRED.filter((k) => obj[k] === undefined || obj[k] === null);
  if (missing.length > 0) {
    const keys = Object.keys(obj).length;
    return reject("missing_field", `missing ${missing.join(", ")} (body has ${keys} key${keys === 1 ? "" : "s"})`, obj);
  }
  for (const key of [...REQUIRED, "locale"] as const) {
    const value = obj[key];
    if (value !== undefined && value !== null && typeof value !== "string") {
      return reject("wrong_type", `${key} must be a string, got ${typeName(value)}`, obj);
    }
  }
  const s = obj as Record<(typeof REQUIRED)[number], string> & { locale?: string | null };
  for (const key of REQUIRED) {
    if (s[key].trim() === "") return reject("empty_field", `${key} is empty`, obj);
  }
  for (const key of [...REQUIRED, "locale"] as const) {
    // Postgres text cannot hold NUL; refuse it here with a clear reason rather than as a database error.
    const value = obj[key];
    if (typeof value === "string" && value.includes("\u0000")) return reject("invalid_text", `${key} contains a NUL character`, obj);
    // A lone UTF-16 surrogate becomes U+FFFD in UTF-8: distinct device ids would share a pseudonym.
    if (typeof value === "string" && !value.isWellFormed()) return reject("invalid_text", `${key} contains an unpaired UTF-16 surrogate`, obj);
  }
  const tooLong =
    checkLength("user_id", s.user_id, LIMITS.userId) ??
    checkLength("device_type", s.device_type, LIMITS.deviceType) ??
    checkLength("device_id", s.device_id, LIMITS.deviceId) ??
    checkLength("ip", s.ip, LIMITS.ip) ??
    (typeof s.locale === "string" ? checkLength("locale", s.locale, LIMITS.locale) : null);
  if (tooLong !== null) return reject("too_long", tooLong, obj);

  const ip = canonicalizeIp(s.ip.trim());
  if (ip === null) return reject("invalid_ip", "ip is not a valid IPv4 or IPv6 address", obj);
  const appVersion = encodeAppVersion(s.app_version.trim());
  if (appVersion === null) {
    return reject("invalid_app_version", 'app_version must be "MAJOR[.MINOR[.PATCH]]" with parts 0-999', obj);
  }
  const locale = typeof s.locale === "string" && s.locale !== "" ? s.locale : null;
  return {
    ok: true,
    json: obj,
    event: { userId: s.user_id, deviceType: s.device_type, ip, deviceId: s.device_id, locale, appVersion },
  };
}

/** Length in characters as Postgres varchar counts them (code points, not UTF-16 units). */
function checkLength(field: string, value: string, max: number): string | null {
  if (value.length <= max) return null;
  let n = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < value.length) i++; // a surrogate pair is one character
    if (++n > max) return `${field} is longer than ${max} characters`;
  }
  return null;
}

function typeName(value: unknown): string {
  return Array.isArray(value) ? "array" : typeof value;
}

function reject(reason: ReasonCode, detail: string, json: unknown): ParseResult {
  return { ok: false, rejection: { reason, detail }, json };
}
