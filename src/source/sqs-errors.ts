import { FatalError, TransientError } from "../errors.ts";

/** Errors no retry can fix: the queue is gone, the credentials are refused, the request is malformed. */
const FATAL = new Set([
  "AWS.SimpleQueueService.NonExistentQueue",
  "QueueDoesNotExist",
  "AccessDenied",
  "AccessDeniedException",
  "InvalidClientTokenId",
  "UnrecognizedClientException",
  "SignatureDoesNotMatch",
  "InvalidAddress",
  "InvalidSecurity",
  "KmsAccessDenied",
  "KmsDisabled",
  "KmsNotFound",
]);

/** What an endpoint answers when it does not speak the wire protocol the client chose. */
const WRONG_PROTOCOL = new Set(["InvalidAction", "UnknownOperation", "UnknownOperationException", "MissingAction", "SerializationException"]);

const THROTTLING = /Throttl|TooManyRequests|RequestLimitExceeded|SlowDown|OverLimit/i;

/**
 * Maps an SDK error onto masq's classes. Throttling, 5xx and network faults are transient; a client error (4xx)
 * will fail the same way every time, so it is fatal, with a hint when the endpoint speaks another protocol.
 */
export function classifySqsError(err: unknown, action: string): TransientError | FatalError {
  if (err instanceof TransientError || err instanceof FatalError) return err;
  const e = err as { name?: string; Code?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const name = e.Code ?? e.name ?? e.code ?? "Error";
  const message = `SQS ${action}: ${name}: ${e.message ?? String(err)}`;
  const status = e.$metadata?.httpStatusCode;
  if (WRONG_PROTOCOL.has(name) || /Deserialization error|Unexpected token '<'/.test(e.message ?? "")) {
    if (status === undefined || status < 500) {
      return new FatalError(
        `${message} — the endpoint does not speak the SQS wire protocol masq used; set MASQ_SQS_PROTOCOL=query for LocalStack before 3.0 and other Query-only endpoints, or json for AWS and current emulators`,
      );
    }
  }
  if (FATAL.has(name)) return new FatalError(message);
  if (status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429 && !THROTTLING.test(name)) {
    return new FatalError(message);
  }
  return new TransientError(message, `sqs_${action}`);
}
