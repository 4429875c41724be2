import { maskEvent, redactBody, TooDeepError } from "../mask/mask-event.ts";
import type { Pseudonymizer } from "../mask/pseudonymize.ts";
import type { Outcome } from "../sink/write-batch.ts";
import { parseLoginEvent } from "../transform/login-event.ts";

export interface IncomingMessage {
  messageId: string;
  body: string;
  /** SentTimestamp; when absent (never on AWS), create_date falls back to the receive time and the runner warns. */
  sentAt: Date | null;
  receivedAt: Date;
}

/**
 * Validate, transform and mask one message: pure CPU work, no I/O. What the result writes holds no plain PII:
 * either a row with pseudonyms, or a quarantine record whose body has every PII value replaced by its pseudonym.
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
    let redactedBody: string | null = null;
    let detail = parsed.rejection.detail;
    if (parsed.json !== undefined) {
      try {
        redactedBody = JSON.stringify(redactBody(parsed.json, p));
      } catch (err) {
        if (!(err instanceof TooDeepError)) throw err;
        detail = `${detail}; body not kept: ${err.message}`;
      }
    }
    return { ...meta, kind: "quarantine", reason: parsed.rejection.reason, detail, redactedBody, originalBody: m.body };
  } catch (err) {
    // Invariant: no body stops the pipeline. Whatever slipped past the validator is quarantined, without its body.
    return { ...meta, kind: "quarantine", reason: "unprocessable", detail: `masq could not process this body (${(err as Error).name})`, redactedBody: null, originalBody: m.body };
  }
}
