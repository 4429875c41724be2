/**
 * The SQS client masq makes: createSqsClient, built for CPU per call, with lanes that carry one call's abort signal and
 * timeout; and detectSqsProtocol, which finds the wire protocol (AWS JSON or Query) a queue's endpoint speaks.
 */
import { createHash, createHmac, createSecretKey, type Hash, type Hmac, type KeyObject } from "node:crypto";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { SQSClient, type SQSClientConfig, GetQueueAttributesCommand } from "@aws-sdk/client-sqs";
import { AwsJson1_0Protocol, AwsQueryProtocol } from "@aws-sdk/config/protocol";
import { ConfigError } from "../errors.ts";
import type { SqsProtocol, SqsProtocolSetting } from "../settings/config.ts";
import { classifySqsError, isWrongProtocol, mayBeWrongProtocol } from "./sqs-errors.ts";

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
  /**
   * Only for emulators that accept anything; everywhere else the SDK's credential chain applies. (Lanes pass their
   * client's resolved provider.)
   */
  credentials?: { accessKeyId: string; secretAccessKey: string } | SQSClient["config"]["credentials"];
}

/**
 * The SQS client for one wire protocol: AWS JSON 1.0 (AWS and current emulators) or the older Query protocol
 * (LocalStack before 3.0 and some SQS-compatible services). Both come from the SDK; which one an endpoint speaks is
 * found by detectSqsProtocol (below) unless MASQ_SQS_PROTOCOL forces one.
 *
 * Configured for CPU per call, which was masq's limit (the SDK's per-call machinery, not the wire):
 *  - the middleware chain is resolved once per command type (cacheMiddleware) instead of once per call; the SDK
 *    uses the cache only for calls sent without options, so per-call settings go through the request handler
 *    instead (SqsLane, for SqsSource);
 *  - the user-agent, logger and recursion-detection middlewares are left out: a static User-Agent (USER_AGENT,
 *    what CloudTrail shows) is set by the request handler, the SDK's logger is a no-op, and recursion detection
 *    only matters inside Lambda with X-Ray tracing;
 *  - one SigV4 signer for the client's life, hashing with node:crypto and HMAC keys kept as KeyObjects. Signing and
 *    clock-skew correction are the SDK's own: the signer is the one the SDK builds, and the skew offset lives in the
 *    client's config, which the signer reads per call.
 */
export function createSqsClient(opts: SqsClientOptions): SQSClient {
  const maxSockets = opts.maxSockets ?? 64;
  const requestTimeoutMs = opts.requestTimeoutMs ?? 35_000;
  const client = buildClient(opts, {
    connectionTimeout: 5_000,
    requestTimeout: requestTimeoutMs,
    // The SDK only warns when a request passes its timeout unless told to fail it.
    throwOnRequestTimeout: true,
    httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
    httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
  });
  // The handler the SDK built from the options above, wrapped; lanes share it (and so its sockets).
  const http = client.config.requestHandler as unknown as HttpHandler;
  client.config.requestHandler = new LaneHandler(http, requestTimeoutMs, true) as unknown as RequestHandler;
  // Lanes also share the credentials provider (one fetch from the credential chain, e.g. the instance metadata
  // service, for all of them, not one per lane) and the clock-skew offset the SDK learns from answers' Date headers.
  const credentials = client.config.credentials;
  const clock = { offset: client.config.systemClockOffset };
  shareClockOffset(client, clock);
  lanes.set(client, () => {
    const handler = new LaneHandler(http, requestTimeoutMs, false);
    const lane = buildClient({ ...opts, credentials }, handler as unknown as RequestHandler);
    shareClockOffset(lane, clock);
    return { client: lane, handler };
  });
  return client;
}

/** The SDK reads and writes config.systemClockOffset per call (signing, and correcting from answers). */
function shareClockOffset(client: SQSClient, clock: { offset: number }): void {
  Object.defineProperty(client.config, "systemClockOffset", {
    get: () => clock.offset,
    set: (offset: number) => (clock.offset = offset),
    enumerable: true,
    configurable: true,
  });
}

/** The part of the SDK's NodeHttpHandler masq uses (the SDK's own types mix in its constructor options). */
interface HttpHandler {
  handle(request: { headers: Record<string, string> }, options?: { abortSignal?: AbortSignal | undefined; requestTimeout?: number | undefined }): Promise<unknown>;
  updateHttpClientConfig?(key: never, value: never): void;
  httpHandlerConfigs?(): object;
  destroy?(): void;
}
type RequestHandler = SQSClient["config"]["requestHandler"];

function buildClient(opts: SqsClientOptions, requestHandler: SQSClientConfig["requestHandler"]): SQSClient {
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
    cacheMiddleware: true,
    sha256: KeyedSha256,
    requestHandler,
  });
  const stack = client.middlewareStack;
  // In place of the SDK's retry middleware, by its name and position (@smithy/core retryMiddlewareOptions).
  if (maxAttempts === 1) {
    stack.add((next) => (args) => next(args), { name: "retryMiddleware", tags: ["RETRY"], step: "finalizeRequest", priority: "high", override: true });
  }
  for (const name of ["getUserAgentMiddleware", "loggerMiddleware", "recursionDetectionMiddleware"]) stack.remove(name);
  // The SDK builds a new SignatureV4 per call (spreading the whole client config into it); its inputs (region,
  // service, credentials provider, hash) are fixed for the client's life, so the first one serves every call.
  const signerFor = client.config.signer;
  let signer: ReturnType<typeof signerFor> | undefined;
  client.config.signer = (authScheme) => (signer ??= signerFor(authScheme).catch((err: unknown) => {
    signer = undefined;
    throw err;
  }));
  return client;
}

/** What CloudTrail shows as the caller's user agent: a constant, where the SDK's middleware built one per call. */
export const USER_AGENT = "masq aws-sdk-js-v3";

/**
 * The request handler of one client: the SDK's NodeHttpHandler (shared by a client and its lanes), given the abort
 * signal and timeout of the call this client carries now, and the static user agent. User-Agent is not signed
 * (SigV4 leaves it out), so setting it here, after signing, is what the SDK's own middleware amounts to.
 * Options given to client.send still win: detectSqsProtocol and the other one-off calls pass theirs.
 */
class LaneHandler {
  readonly metadata = { handlerProtocol: "http/1.1" };
  signal: AbortSignal | undefined;
  timeoutMs: number;
  private readonly http: HttpHandler;
  private readonly owner: boolean;

  constructor(http: HttpHandler, timeoutMs: number, owner: boolean) {
    this.http = http;
    this.timeoutMs = timeoutMs;
    this.owner = owner;
  }

  handle(request: Parameters<HttpHandler["handle"]>[0], options?: Parameters<HttpHandler["handle"]>[1]): Promise<unknown> {
    request.headers["user-agent"] = USER_AGENT;
    return this.http.handle(request, {
      abortSignal: options?.abortSignal ?? this.signal,
      requestTimeout: options?.requestTimeout ?? this.timeoutMs,
    });
  }

  updateHttpClientConfig(key: never, value: never): void {
    this.http.updateHttpClientConfig?.(key, value);
  }

  httpHandlerConfigs(): object {
    return this.http.httpHandlerConfigs?.() ?? {};
  }

  /** Only the client that built the handler closes its sockets; a lane's client has nothing of its own to close. */
  destroy(): void {
    if (this.owner) this.http.destroy?.();
  }
}

/**
 * A client of its own for one call at a time, whose request handler carries that call's abort signal and timeout:
 * the one way to keep the SDK's cached middleware chain (no per-call options) and still cut a long poll short at
 * shutdown. Lanes share the sockets of the client they were made from.
 */
export interface SqsLane {
  readonly client: SQSClient;
  readonly handler: { signal: AbortSignal | undefined; timeoutMs: number };
}

const lanes = new WeakMap<SQSClient, () => SqsLane>();

/** A new lane of a client made by createSqsClient. */
export function newSqsLane(client: SQSClient): SqsLane {
  const make = lanes.get(client);
  if (make === undefined) throw new Error("newSqsLane: the client was not made by createSqsClient");
  return make();
}

/**
 * SHA-256 and HMAC-SHA256 for the SDK's signer, from node:crypto. Each signature is an HMAC under the day's signing
 * key (the same Uint8Array while the SDK caches it) and one under the secret access key (for the SDK's cache
 * lookup); a KeyObject made once per key saves importing the key on every HMAC.
 */
class KeyedSha256 {
  private static readonly byBytes = new WeakMap<Uint8Array, KeyObject>();
  private static readonly byText = new Map<string, KeyObject>();
  private readonly secret: string | Uint8Array | undefined;
  private hash!: Hash | Hmac;

  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.secret = secret === undefined || typeof secret === "string" ? secret : toBytes(secret);
    this.reset();
  }

  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.hash.update(typeof data === "string" ? data : toBytes(data));
  }

  digest(): Promise<Uint8Array> {
    return Promise.resolve(this.hash.digest());
  }

  reset(): void {
    this.hash = this.secret === undefined ? createHash("sha256") : createHmac("sha256", KeyedSha256.keyOf(this.secret));
  }

  private static keyOf(secret: string | Uint8Array): KeyObject {
    if (typeof secret !== "string") {
      let key = KeyedSha256.byBytes.get(secret);
      if (key === undefined) KeyedSha256.byBytes.set(secret, (key = createSecretKey(secret)));
      return key;
    }
    let key = KeyedSha256.byText.get(secret);
    if (key === undefined) {
      // A handful in a process's life (one secret per credentials); rotated credentials must not pile up.
      if (KeyedSha256.byText.size >= 8) KeyedSha256.byText.clear();
      KeyedSha256.byText.set(secret, (key = createSecretKey(Buffer.from(secret, "utf8"))));
    }
    return key;
  }
}

function toBytes(data: ArrayBuffer | ArrayBufferView): Uint8Array {
  return data instanceof Uint8Array ? data : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
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
