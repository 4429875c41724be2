import { ConfigError, FatalError, TransientError } from "../errors.ts";

/** The shape of an SDK error, as far as masq reads it. */
interface SdkError {
  name?: string;
  Code?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

/** The credentials were read but the endpoint refused them: a wrong key, secret or session token. */
const CREDENTIALS_REFUSED = new Set([
  "InvalidClientTokenId",
  "UnrecognizedClientException",
  "SignatureDoesNotMatch",
  "IncompleteSignature",
  "MissingAuthenticationToken",
  "InvalidSecurity",
  "AuthFailure",
]);

const CREDENTIALS_EXPIRED = new Set(["ExpiredToken", "ExpiredTokenException", "RequestExpired"]);

const ACCESS_DENIED = new Set(["AccessDenied", "AccessDeniedException", "KmsAccessDenied"]);

const NO_SUCH_QUEUE = new Set(["AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"]);

/** Errors no retry can fix that are not the user's settings: a broken invariant, so exit 1. */
const FATAL = new Set(["KmsDisabled", "KmsNotFound"]);

/** What an endpoint answers when it does not speak the wire protocol the client chose, whatever the HTTP status. */
const WRONG_PROTOCOL = new Set(["InvalidAction", "UnknownOperation", "UnknownOperationException", "MissingAction", "SerializationException"]);
/** LocalStack before 3.0 answers a JSON request with HTTP 500 and this XML error (InternalError). */
const WRONG_PROTOCOL_MESSAGE = /Missing Action|Operation detection failed|Unknown action|UnknownOperation/i;
/** The SDK could not parse the answer: another protocol's body, or a proxy's error page. */
const UNPARSEABLE = /Deserialization error|Unexpected token '<'|is not valid JSON|Unexpected end of JSON|non-whitespace character/i;

const THROTTLING = /Throttl|TooManyRequests|RequestLimitExceeded|SlowDown|OverLimit/i;

function errorName(e: SdkError): string {
  return e.Code ?? e.name ?? e.code ?? "Error";
}

/** The endpoint understood nothing of the request: it speaks the other SQS protocol. */
export function isWrongProtocol(err: unknown): boolean {
  const e = err as SdkError;
  const status = e.$metadata?.httpStatusCode;
  if (WRONG_PROTOCOL.has(errorName(e)) || WRONG_PROTOCOL_MESSAGE.test(e.message ?? "")) return true;
  // A 5xx page the SDK cannot parse is as likely a proxy in trouble as another protocol: not decided here.
  return UNPARSEABLE.test(e.message ?? "") && (status === undefined || status < 500);
}

/** The answer could not be read as this protocol's: worth asking in the other protocol before deciding. */
export function mayBeWrongProtocol(err: unknown): boolean {
  return isWrongProtocol(err) || UNPARSEABLE.test((err as SdkError).message ?? "");
}

/**
 * Maps an SDK error onto masq's classes, where the call is made:
 *  - a mistake in the settings (no or refused credentials, no such queue, a bad region, the wrong protocol) is a
 *    ConfigError naming the setting: exit 2, never retried;
 *  - access denied and other refusals no retry can cure are a FatalError: exit 1;
 *  - throttling, 5xx and network faults are transient: waiting can cure them.
 * Messages name the queue and the setting, never a secret (the SDK's messages carry none).
 */
export function classifySqsError(err: unknown, action: string, queueUrl?: string): TransientError | FatalError | ConfigError {
  if (err instanceof TransientError || err instanceof FatalError || err instanceof ConfigError) return err;
  const e = err as SdkError;
  const name = errorName(e);
  const detail = e.message ?? String(err);
  const queue = queueUrl === undefined ? "the queue" : queueUrl;
  const status = e.$metadata?.httpStatusCode;
  if (name === "CredentialsProviderError" && /profile/i.test(detail)) {
    return new ConfigError("AWS_PROFILE", `the AWS SDK could not use the profile: ${detail.split("\n")[0]}`);
  }
  if (name === "CredentialsProviderError") {
    return new ConfigError(
      "AWS_ACCESS_KEY_ID/AWS_PROFILE",
      "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an IAM role provides them",
    );
  }
  if (CREDENTIALS_REFUSED.has(name)) {
    return new ConfigError("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", `SQS refused the AWS credentials (${name}): check the key id and secret (or AWS_PROFILE)`);
  }
  if (CREDENTIALS_EXPIRED.has(name)) {
    return new ConfigError("AWS_SESSION_TOKEN", `the AWS credentials have expired (${name}): refresh them (AWS_SESSION_TOKEN, AWS_PROFILE)`);
  }
  if (NO_SUCH_QUEUE.has(name)) {
    return new ConfigError("QUEUE_URL", `no such queue: ${queue} (check the URL, AWS_REGION and the account)`);
  }
  if (name === "InvalidAddress") return new ConfigError("QUEUE_URL", `not a valid queue URL: ${queue}`);
  if (/^Region not accepted|Invalid region/i.test(detail)) {
    return new ConfigError("AWS_REGION", "is not a valid AWS region name (for example us-east-1)");
  }
  if (isWrongProtocol(err)) {
    return new ConfigError(
      "MASQ_SQS_PROTOCOL",
      `the SQS endpoint does not speak the wire protocol masq used (${name}): leave MASQ_SQS_PROTOCOL unset to detect it, or set query for LocalStack before 3.0 and json for AWS and current emulators`,
    );
  }
  const message = `SQS ${action} on ${queue}: ${name}: ${detail}`;
  if (ACCESS_DENIED.has(name)) {
    return new FatalError(`SQS ${action} on ${queue}: access denied: grant the AWS identity sqs:${action} on the queue (QUEUE_URL, AWS_ACCESS_KEY_ID/AWS_PROFILE)`);
  }
  if (FATAL.has(name)) return new FatalError(message);
  if (status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429 && !THROTTLING.test(name)) {
    return new FatalError(message);
  }
  return new TransientError(message, `sqs_${action}`);
}
