import { factsOfJson, factsOfText, NO_FACTS, type QuarantineFacts, redactBody } from "./quarantine-body.ts";
import type { Pseudonymizer } from "./pseudonymize.ts";
import type { IncomingMessage, LoginRow, Outcome } from "./batch.ts";
import { parseLoginEvent, type LoginEvent } from "./login-event.ts";

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
 * Validate, transform and mask one message: pure CPU work, no I/O. What the result writes holds no plain PII:
 * either a row with pseudonyms, or a quarantine record whose body is redacted by allowlist (quarantine-body.ts).
 * The originals (`pii`, `originalBody`) stay in memory until the vault seals them.
 */
export function prepareOutcome(m: IncomingMessage, p: Pseudonymizer): Outcome {
  const meta = { messageId: m.messageId, sentAt: m.sentAt, receivedAt: m.receivedAt, bodyLength: m.body.length };
  try {
    const parsed = parseLoginEvent(m.body);
    if (parsed.ok) {
      const { event } = parsed;
      return { ...meta, kind: "row", row: maskEvent(event, m.sentAt ?? m.receivedAt, p), pii: { ip: event.ip, deviceId: event.deviceId } };
    }
    // Bounded in size and work whatever the body (quarantine-body.ts); a body that is not JSON has no copy at all.
    const redactedBody = parsed.json === undefined ? null : JSON.stringify(redactBody(parsed.json, p));
    // Who the record is about and which pseudonyms it holds, from the parse: the database never re-parses the copy.
    const facts = parsed.json === undefined ? factsOfText(m.body) : factsOfJson(parsed.json, p);
    return { ...meta, kind: "quarantine", reason: parsed.rejection.reason, detail: parsed.rejection.detail, redactedBody, originalBody: m.body, facts };
  } catch (err) {
    // Invariant: no body stops the pipeline. Whatever slipped past the validator is quarantined, without its body,
    // and still names its user when the text does: its original is kept, so erasure and export must find it.
    return { ...meta, kind: "quarantine", reason: "unprocessable", detail: `masq could not process this body (${(err as Error).name})`, redactedBody: null, originalBody: m.body, facts: factsOrNone(m.body) };
  }
}

/** factsOfText, which must not throw where prepareOutcome is catching what did. */
function factsOrNone(body: string): QuarantineFacts {
  try {
    return factsOfText(body);
  } catch {
    return NO_FACTS;
  }
}
