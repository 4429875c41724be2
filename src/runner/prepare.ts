import { maskEvent, redactBody } from "../mask/mask-event.ts";
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
 * Validate, transform and mask one message: pure CPU work, no I/O. The result holds no plain PII: either a row
 * with pseudonyms, or a quarantine record whose body has every PII value replaced by its pseudonym.
 */
export function prepareOutcome(m: IncomingMessage, p: Pseudonymizer): Outcome {
  const parsed = parseLoginEvent(m.body);
  const meta = { messageId: m.messageId, sentAt: m.sentAt, receivedAt: m.receivedAt, bodyLength: m.body.length };
  if (parsed.ok) return { ...meta, kind: "row", row: maskEvent(parsed.event, m.sentAt ?? m.receivedAt, p) };
  return {
    ...meta,
    kind: "quarantine",
    reason: parsed.rejection.reason,
    detail: parsed.rejection.detail,
    redactedBody: parsed.json === undefined ? null : JSON.stringify(redactBody(parsed.json, p)),
  };
}
