/**
 * A login event as masq reads it from a message body. parseLoginEvent is pure and total: any string yields an event or
 * a rejection with a stable reason code, whose detail names fields, never their values. Two values are stored in a
 * canonical form: the ip's text (equal addresses, equal pseudonyms) and app_version as an order-preserving integer.
 */
import { isIPv4, isIPv6 } from "node:net";

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
  // Empty or blank, a locale says nothing: stored as null, never as spaces.
  const locale = typeof s.locale === "string" && s.locale.trim() !== "" ? s.locale : null;
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

/**
 * Canonical text of an IP address, so that equal addresses get equal pseudonyms:
 *   IPv4 → dotted decimal without leading zeros ("010.0.0.1" is rejected by isIPv4, as it is ambiguous);
 *   IPv6 → RFC 5952 (lowercase, no leading zeros, the longest run of two or more zero groups as "::");
 *   IPv4-mapped IPv6 (::ffff:a.b.c.d) → the IPv4 address itself: it is the same host;
 *   IPv4-compatible IPv6 (::a.b.c.d, deprecated by RFC 4291 §2.5.5.1 but still printed by some stacks) → the IPv4
 *   address too, when its first octet is not 0: that excludes :: and ::1 (unspecified, loopback), which are not
 *   IPv4 hosts, and the rest of ::/104, which no IPv4 host uses. The notation does not matter: ::cb00:711d folds
 *   like ::203.0.113.29.
 * Returns null for anything else, including zone ids ("fe80::1%eth0"), which name an interface, not a host.
 */
export function canonicalizeIp(text: string): string | null {
  if (isIPv4(text)) return text;
  if (!isIPv6(text) || text.includes("%")) return null;
  const groups = parseIPv6(text);
  if (groups === null) return null;
  if (isIPv4Mapped(groups) || isIPv4Compatible(groups)) {
    const hi = groups[6]!;
    const lo = groups[7]!;
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return formatIPv6(groups);
}

function isIPv4Mapped(groups: number[]): boolean {
  return groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
}

function isIPv4Compatible(groups: number[]): boolean {
  return groups.slice(0, 6).every((g) => g === 0) && groups[6]! >= 0x100;
}

/** Eight 16-bit groups of an address that isIPv6 has already accepted. */
export function parseIPv6(text: string): number[] | null {
  let body = text;
  const tail: number[] = [];
  const lastColon = body.lastIndexOf(":");
  const last = body.slice(lastColon + 1);
  if (last.includes(".")) {
    const octets = last.split(".").map(Number);
    tail.push((octets[0]! << 8) | octets[1]!, (octets[2]! << 8) | octets[3]!);
    body = body.slice(0, lastColon + 1) + "0";
  }
  const [head, rest] = body.split("::") as [string, string | undefined];
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((h) => parseInt(h, 16)));
  const left = parse(head);
  const right = rest === undefined ? [] : parse(rest);
  if (tail.length > 0) (right.length > 0 ? right : left).pop();
  const fill = 8 - tail.length - left.length - right.length;
  if (rest === undefined ? fill !== 0 : fill < 1) return null;
  return [...left, ...new Array<number>(fill).fill(0), ...right, ...tail];
}

function formatIPv6(groups: number[]): string {
  // Find the longest run of zero groups (length ≥ 2); the first one wins a tie (RFC 5952 §4.2.3).
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/**
 * app_version "MAJOR[.MINOR[.PATCH]]", each part 0–999, stored as MAJOR·1,000,000 + MINOR·1,000 + PATCH.
 * The encoding preserves order (2.10.0 > 2.9.9) and fits a Postgres integer (max 999,999,999).
 * Leading zeros are accepted ("2.03" is 2.3.0), as most version parsers do.
 * The SQL function masq.app_version_text(integer) in migrations/ is the inverse.
 */
const APP_VERSION = /^(\d{1,3})(?:\.(\d{1,3})(?:\.(\d{1,3}))?)?$/;

export const MAX_APP_VERSION = 999_999_999;

/** Returns the integer encoding, or null when the text is not a valid version. */
export function encodeAppVersion(text: string): number | null {
  const match = APP_VERSION.exec(text);
  if (match === null) return null;
  const major = Number(match[1]);
  const minor = match[2] === undefined ? 0 : Number(match[2]);
  const patch = match[3] === undefined ? 0 : Number(match[3]);
  return major * 1_000_000 + minor * 1_000 + patch;
}

/** The inverse of encodeAppVersion, always in MAJOR.MINOR.PATCH form. */
export function decodeAppVersion(value: number): string {
  if (!Number.isInteger(value) || value < 0 || value > MAX_APP_VERSION) {
    throw new RangeError(`not an encoded app_version: ${value}`);
  }
  const major = Math.floor(value / 1_000_000);
  const minor = Math.floor(value / 1_000) % 1_000;
  const patch = value % 1_000;
  return `${major}.${minor}.${patch}`;
}
