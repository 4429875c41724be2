import type { LoginEvent } from "../transform/login-event.ts";
import { canonicalizeIp } from "../transform/ip.ts";
import type { Pseudonymizer, PiiKind } from "./pseudonymize.ts";

/** One row of user_logins, as written. Holds no plain PII. */
export interface LoginRow {
  userId: string;
  deviceType: string;
  maskedIp: string;
  maskedDeviceId: string;
  locale: string | null;
  appVersion: number;
  createDate: string; // YYYY-MM-DD, UTC
}

export function maskEvent(event: LoginEvent, sentAt: Date, p: Pseudonymizer): LoginRow {
  return {
    userId: event.userId,
    deviceType: event.deviceType,
    maskedIp: p.pseudonymize("ip", event.ip),
    maskedDeviceId: p.pseudonymize("device_id", event.deviceId),
    locale: event.locale,
    appVersion: event.appVersion,
    createDate: sentAt.toISOString().slice(0, 10),
  };
}

/**
 * Key names that hold PII in a body, compared after lowercasing and dropping "_", "-" and spaces, so that
 * device_id, deviceId, Device-ID and ip_address are all caught.
 */
const PII_KEYS = new Map<string, PiiKind>([
  ["ip", "ip"],
  ["ipaddress", "ip"],
  ["ipaddr", "ip"],
  ["clientip", "ip"],
  ["remoteip", "ip"],
  ["sourceip", "ip"],
  ["deviceid", "device_id"],
]);

function piiKind(key: string): PiiKind | undefined {
  return PII_KEYS.get(key.toLowerCase().replace(/[\s_-]/g, ""));
}

/** Candidate IP addresses inside free text; each is replaced only if it really parses as one. */
const IP_IN_TEXT = /(?:\d{1,3}\.){3}\d{1,3}|(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?/g;

/**
 * A copy of a rejected body that is safe to store: every value under a PII key (ip, device_id and their spellings,
 * at any depth) is replaced by its pseudonym ("hmac:<hex>"), and so is every IP address found anywhere else, in
 * values or in keys, whole or inside longer text. A body that is not JSON is not kept at all (the quarantine row
 * says so and records its length): free text cannot be redacted with confidence.
 */
export function redactBody(json: unknown, p: Pseudonymizer): unknown {
  return redact(json, undefined, p, 0);
}

/** Deeper bodies are not kept: no login event nests, and unbounded recursion would let one message crash masq. */
export const MAX_REDACT_DEPTH = 64;

export class TooDeepError extends Error {
  override name = "TooDeepError";
}

function redact(value: unknown, kind: PiiKind | undefined, p: Pseudonymizer, depth: number): unknown {
  if (depth > MAX_REDACT_DEPTH) throw new TooDeepError(`body nests deeper than ${MAX_REDACT_DEPTH} levels`);
  if (Array.isArray(value)) return value.map((v) => redact(v, kind, p, depth + 1));
  if (value !== null && typeof value === "object") {
    // fromEntries defines own properties, so a "__proto__" key in the body stays a key.
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [redactText(k, p), redact(v, piiKind(k) ?? kind, p, depth + 1)]));
  }
  if (kind !== undefined && value !== null && value !== undefined) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    const canonical = kind === "ip" ? (canonicalizeIp(text.trim()) ?? text) : text;
    return `hmac:${p.pseudonymize(kind, canonical)}`;
  }
  return typeof value === "string" ? redactText(value, p) : value;
}

function redactText(text: string, p: Pseudonymizer): string {
  const whole = canonicalizeIp(text.trim());
  if (whole !== null) return `hmac:${p.pseudonymize("ip", whole)}`;
  return text.replace(IP_IN_TEXT, (candidate) => {
    const ip = canonicalizeIp(candidate);
    return ip === null ? candidate : `hmac:${p.pseudonymize("ip", ip)}`;
  });
}
