import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { SQSClient } from "@aws-sdk/client-sqs";
import { AwsJson1_0Protocol, AwsQueryProtocol } from "@aws-sdk/config/protocol";
import type { SqsProtocol } from "../config.ts";

export interface SqsClientOptions {
  region: string;
  /** Overrides the SDK's own resolution (AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL, then the queue URL's host). */
  endpoint?: string | undefined;
  protocol?: SqsProtocol;
  /** Concurrent long polls plus deletes and visibility changes must not queue behind each other for a socket. */
  maxSockets?: number;
  /** Longest request: a long poll's wait plus a margin. */
  requestTimeoutMs?: number;
  /** Attempts per call, the first included (default 3); a probe wants 1: its caller decides about retrying. */
  maxAttempts?: number;
  /** Only for emulators that accept anything; everywhere else the SDK's credential chain applies. */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

/**
 * The SQS client for one wire protocol: AWS JSON 1.0 (AWS and current emulators) or the older Query protocol
 * (LocalStack before 3.0 and some SQS-compatible services). Both come from the SDK; which one an endpoint speaks is
 * found by detectSqsProtocol (sqs-protocol.ts) unless MASQ_SQS_PROTOCOL forces one.
 */
export function createSqsClient(opts: SqsClientOptions): SQSClient {
  const maxSockets = opts.maxSockets ?? 64;
  return new SQSClient({
    region: opts.region,
    // With an explicit endpoint, requests go there whatever host the queue URL names (an emulator's URLs often
    // name a host that does not resolve); without one, the SDK's own endpoint resolution applies.
    ...(opts.endpoint === undefined ? {} : { endpoint: opts.endpoint, useQueueUrlAsEndpoint: false }),
    ...(opts.credentials === undefined ? {} : { credentials: opts.credentials }),
    protocol: opts.protocol === "query" ? AwsQueryProtocol : AwsJson1_0Protocol,
    maxAttempts: opts.maxAttempts ?? 3,
    // The SDK builds its NodeHttpHandler from these options.
    requestHandler: {
      connectionTimeout: 5_000,
      requestTimeout: opts.requestTimeoutMs ?? 35_000,
      httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
      httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
    },
  });
}
