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

const PII_KEYS: Record<string, PiiKind> = { ip: "ip", device_id: "device_id" };

/**
 * A copy of a rejected body that is safe to store: every value under a key named ip or device_id (at any depth) is
 * replaced by its pseudonym, and so is any string anywhere that parses as an IP address. A body that is not JSON
 * cannot be inspected, so it is not kept at all (the quarantine row says so and records its length).
 */
export function redactBody(json: unknown, p: Pseudonymizer): unknown {
  return redact(json, undefined, p);
}

function redact(value: unknown, kind: PiiKind | undefined, p: Pseudonymizer): unknown {
  if (Array.isArray(value)) return value.map((v) => redact(v, kind, p));
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = redact(v, PII_KEYS[k] ?? kind, p);
    return out;
  }
  if (kind !== undefined && value !== null && value !== undefined) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    const canonical = kind === "ip" ? (canonicalizeIp(text.trim()) ?? text) : text;
    return `hmac:${p.pseudonymize(kind, canonical)}`;
  }
  if (typeof value === "string") {
    const ip = canonicalizeIp(value.trim());
    if (ip !== null) return `hmac:${p.pseudonymize("ip", ip)}`;
  }
  return value;
}
