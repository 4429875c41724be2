import { GetQueueAttributesCommand } from "@aws-sdk/client-sqs";
import type { SqsProtocol, SqsProtocolSetting } from "../settings/config.ts";
import { ConfigError } from "../errors.ts";
import { createSqsClient, type SqsClientOptions } from "./sqs-client.ts";
import { classifySqsError, isWrongProtocol, mayBeWrongProtocol } from "./sqs-errors.ts";

export interface DetectSqsProtocolOptions {
  queueUrl: string;
  region: string;
  endpoint: string | undefined;
  /** MASQ_SQS_PROTOCOL: "auto" detects; "json" or "query" is checked, and refused with exit 2 if the endpoint does not speak it. */
  setting: SqsProtocolSetting;
  credentials?: SqsClientOptions["credentials"];
  signal?: AbortSignal;
}

const PROBE_TIMEOUT_MS = 10_000;

/**
 * The wire protocol the queue's endpoint speaks, found with one cheap call (GetQueueAttributes for the retention
 * period) per protocol tried: JSON first (AWS and current emulators), then Query when the JSON answer shows the
 * endpoint did not understand it (LocalStack before 3.0 answers HTTP 500 with an XML `Missing Action` error).
 *
 * Throws what the answer means, classified like every SQS call: ConfigError for a mistake in the settings (no or
 * refused credentials, no such queue, a forced protocol the endpoint does not speak: MASQ_SQS_PROTOCOL), FatalError
 * for access denied, TransientError when the endpoint cannot be reached (the caller decides whether to wait).
 */
export async function detectSqsProtocol(opts: DetectSqsProtocolOptions): Promise<SqsProtocol> {
  if (opts.setting !== "auto") {
    const err = await probe(opts, opts.setting);
    if (err === undefined) return opts.setting;
    if (isWrongProtocol(err) || (mayBeWrongProtocol(err) && (await probe(opts, other(opts.setting))) === undefined)) {
      throw new ConfigError(
        "MASQ_SQS_PROTOCOL",
        `is ${opts.setting}, but the SQS endpoint does not speak it: set MASQ_SQS_PROTOCOL=${other(opts.setting)}, or leave it unset to detect the protocol`,
      );
    }
    throw classifySqsError(err, "GetQueueAttributes", opts.queueUrl);
  }
  const jsonErr = await probe(opts, "json");
  if (jsonErr === undefined) return "json";
  if (!mayBeWrongProtocol(jsonErr)) throw classifySqsError(jsonErr, "GetQueueAttributes", opts.queueUrl);
  const queryErr = await probe(opts, "query");
  if (queryErr === undefined) return "query";
  if (mayBeWrongProtocol(queryErr)) {
    // Neither answer could be read: not an SQS endpoint, or a proxy failing (a 5xx page) which waiting can cure.
    const neither = classifySqsError(jsonErr, "GetQueueAttributes", opts.queueUrl);
    if (neither.name === "TransientError") throw neither;
    throw new ConfigError("QUEUE_URL", `the endpoint of ${opts.queueUrl} answers neither SQS protocol (JSON nor Query): is it an SQS endpoint?`);
  }
  // The endpoint understood the Query request: its answer (no such queue, access denied, …) is the real one.
  throw classifySqsError(queryErr, "GetQueueAttributes", opts.queueUrl);
}

function other(protocol: SqsProtocol): SqsProtocol {
  return protocol === "json" ? "query" : "json";
}

/** One GetQueueAttributes in the given protocol: undefined when it succeeded, else the SDK's error. */
async function probe(opts: DetectSqsProtocolOptions, protocol: SqsProtocol): Promise<unknown> {
  const client = createSqsClient({
    region: opts.region,
    endpoint: opts.endpoint,
    protocol,
    maxSockets: 1,
    maxAttempts: 1,
    requestTimeoutMs: PROBE_TIMEOUT_MS,
    ...(opts.credentials === undefined ? {} : { credentials: opts.credentials }),
  });
  const timeout = AbortSignal.timeout(PROBE_TIMEOUT_MS + 5_000);
  const abortSignal = opts.signal === undefined ? timeout : AbortSignal.any([opts.signal, timeout]);
  try {
    await client.send(new GetQueueAttributesCommand({ QueueUrl: opts.queueUrl, AttributeNames: ["MessageRetentionPeriod"] }), { abortSignal });
    return undefined;
  } catch (err) {
    return err;
  } finally {
    client.destroy();
  }
}
