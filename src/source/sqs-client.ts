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
  /**
   * Attempts per call, the first included (default 3). 1 when the caller retries itself: a probe, and `run`, whose
   * runner backs off and retries receives, deletes and visibility extensions (runner.ts). The SDK's retry middleware
   * is then replaced by a pass-through, so a call pays nothing for it.
   */
  maxAttempts?: number;
  /**
   * The queue's URL: with no endpoint, requests go to its host. Together with the endpoint it tells whether the
   * transport already protects the bodies (see bodyChecksumNeeded).
   */
  queueUrl?: string | undefined;
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
  const maxAttempts = opts.maxAttempts ?? 3;
  const client = new SQSClient({
    region: opts.region,
    // With an explicit endpoint, requests go there whatever host the queue URL names (an emulator's URLs often
    // name a host that does not resolve); without one, the SDK's own endpoint resolution applies.
    ...(opts.endpoint === undefined ? {} : { endpoint: opts.endpoint, useQueueUrlAsEndpoint: false }),
    ...(opts.credentials === undefined ? {} : { credentials: opts.credentials }),
    protocol: opts.protocol === "query" ? AwsQueryProtocol : AwsJson1_0Protocol,
    maxAttempts,
    // The SDK's own MD5 implementation, or false for none.
    ...(bodyChecksumNeeded(opts.endpoint, opts.queueUrl) ? {} : { md5: false as const }),
    // The SDK builds its NodeHttpHandler from these options.
    requestHandler: {
      connectionTimeout: 5_000,
      requestTimeout: opts.requestTimeoutMs ?? 35_000,
      httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
      httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
    },
  });
  // In place of the SDK's retry middleware, by its name and position (@smithy/core retryMiddlewareOptions).
  if (maxAttempts === 1) {
    client.middlewareStack.add((next) => (args) => next(args), { name: "retryMiddleware", tags: ["RETRY"], step: "finalizeRequest", priority: "high", override: true });
  }
  return client;
}

/**
 * Whether ReceiveMessage should check each body against its MD5OfBody (the SDK's middleware-sdk-sqs, on by default:
 * an MD5 of every body, about a tenth of the SDK's CPU per message). The check finds bodies changed on the wire. Over
 * TLS (AWS: no endpoint, or any https endpoint) the record MACs already refuse a changed byte, and over loopback
 * there is no wire; only plain HTTP to another host keeps the check. Without it a body damaged anyway would still
 * not be lost: it fails validation and is quarantined with its original (encrypted), to replay.
 */
export function bodyChecksumNeeded(endpoint: string | undefined, queueUrl: string | undefined): boolean {
  const target = endpoint ?? queueUrl;
  if (target === undefined) return true;
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    return true;
  }
  if (url.protocol === "https:") return false;
  return !/^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i.test(url.hostname);
}
