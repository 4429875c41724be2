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

/** Maps an SDK error onto masq's classes. Throttling, 5xx and network faults are transient. */
export function classifySqsError(err: unknown, action: string): TransientError | FatalError {
  if (err instanceof TransientError || err instanceof FatalError) return err;
  const e = err as { name?: string; Code?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const name = e.Code ?? e.name ?? e.code ?? "Error";
  const message = `SQS ${action}: ${name}: ${e.message ?? String(err)}`;
  const status = e.$metadata?.httpStatusCode;
  if (FATAL.has(name) || (status !== undefined && (status === 403 || status === 404) && !/Throttl/i.test(name))) {
    return new FatalError(message);
  }
  return new TransientError(message, `sqs_${action}`);
}
