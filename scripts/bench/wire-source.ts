import { createHash, createHmac } from "node:crypto";
import http from "node:http";

/**
 * The wire floor's SQS client: ReceiveMessage and DeleteMessageBatch in AWS JSON 1.0 (the protocol
 * `@aws-sdk/client-sqs` speaks), signed with SigV4, on a keep-alive node:http agent, and nothing else: no middleware,
 * retries, endpoint resolution or clock-skew correction. Written for measurement only (the "wire floor" phase: how
 * far the SDK's per-call work is from the bytes it sends); never shipped, so it handles only what fauxqs answers over
 * plain HTTP. It has the three calls the SQS ceiling's loop makes (sqs-ceiling.ts, CeilingSource), with the same
 * parameters as SqsSource.
 */
export interface WireSourceOptions {
  endpoint: string;
  queueUrl: string;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  maxSockets: number;
}

export interface WireMessage {
  messageId: string;
  receiptHandle: string;
}

const sha256 = (data: string) => createHash("sha256").update(data).digest("hex");
const hmac = (key: string | Buffer, data: string) => createHmac("sha256", key).update(data).digest();
const SIGNED_HEADERS = "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-target";
const CONTENT_TYPE = "application/x-amz-json-1.0";

/** SigV4's signing key for a day (YYYYMMDD), region and service. */
export const signingKey = (secretAccessKey: string, day: string, region: string) => hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, day), region), "sqs"), "aws4_request");

/**
 * The headers of a signed AWS JSON 1.0 POST to `/` of `host`: SigV4 over the same headers the SDK's SignatureV4 signs
 * for SQS (with the payload's hash as x-amz-content-sha256, as it sends it). `key` is signingKey(…) for amzDate's day.
 */
export function signedHeaders(o: { host: string; region: string; accessKeyId: string; key: Buffer; amzDate: string; target: string; body: string }): Record<string, string> {
  const day = o.amzDate.slice(0, 8);
  const payload = sha256(o.body);
  const canonical = `POST\n/\n\ncontent-type:${CONTENT_TYPE}\nhost:${o.host}\nx-amz-content-sha256:${payload}\nx-amz-date:${o.amzDate}\nx-amz-target:${o.target}\n\n${SIGNED_HEADERS}\n${payload}`;
  const scope = `${day}/${o.region}/sqs/aws4_request`;
  const signature = createHmac("sha256", o.key).update(`AWS4-HMAC-SHA256\n${o.amzDate}\n${scope}\n${sha256(canonical)}`).digest("hex");
  return {
    "content-type": CONTENT_TYPE,
    host: o.host,
    "x-amz-content-sha256": payload,
    "x-amz-date": o.amzDate,
    "x-amz-target": o.target,
    authorization: `AWS4-HMAC-SHA256 Credential=${o.accessKeyId}/${scope}, SignedHeaders=${SIGNED_HEADERS}, Signature=${signature}`,
  };
}

export class WireSource {
  readonly #url: URL;
  readonly #agent: http.Agent;
  readonly #o: WireSourceOptions;
  /** The SigV4 signing key, derived once per UTC day (as the SDK caches it). */
  #key: { day: string; key: Buffer } | undefined;

  constructor(o: WireSourceOptions) {
    this.#o = o;
    this.#url = new URL(o.endpoint);
    if (this.#url.protocol !== "http:") throw new Error(`the wire floor's client speaks plain HTTP only (got ${o.endpoint})`);
    this.#agent = new http.Agent({ keepAlive: true, maxSockets: o.maxSockets });
  }

  #signingKey(day: string): Buffer {
    if (this.#key?.day !== day) this.#key = { day, key: signingKey(this.#o.credentials.secretAccessKey, day, this.#o.region) };
    return this.#key.key;
  }

  /** One signed AWS JSON call; resolves with the parsed answer, rejects on a non-200 answer or an abort. */
  #call<T>(action: string, payload: unknown, signal?: AbortSignal): Promise<T> {
    const body = JSON.stringify(payload);
    const amzDate = new Date().toISOString().replace(/[-:]|\.\d{3}/g, "");
    const headers = signedHeaders({
      host: this.#url.host,
      region: this.#o.region,
      accessKeyId: this.#o.credentials.accessKeyId,
      key: this.#signingKey(amzDate.slice(0, 8)),
      amzDate,
      target: `AmazonSQS.${action}`,
      body,
    });
    return new Promise<T>((resolve, reject) => {
      const req = http.request(
        {
          host: this.#url.hostname,
          port: this.#url.port,
          method: "POST",
          path: "/",
          agent: this.#agent,
          signal,
          headers: { ...headers, "content-length": Buffer.byteLength(body) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", reject);
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            if (res.statusCode !== 200) reject(new Error(`${action}: HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
            else resolve((text === "" ? {} : JSON.parse(text)) as T);
          });
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  }

  /** GetQueueAttributes, as the ceiling's loop calls once before its clock starts. */
  async counts(): Promise<void> {
    await this.#call("GetQueueAttributes", { QueueUrl: this.#o.queueUrl, AttributeNames: ["ApproximateNumberOfMessages"] });
  }

  async receiveBatch(opts: { waitTimeSeconds: number; visibilityTimeoutSeconds: number; signal?: AbortSignal }): Promise<WireMessage[]> {
    const res = await this.#call<{ Messages?: { MessageId: string; ReceiptHandle: string }[] }>(
      "ReceiveMessage",
      {
        QueueUrl: this.#o.queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: opts.waitTimeSeconds,
        VisibilityTimeout: opts.visibilityTimeoutSeconds,
        MessageSystemAttributeNames: ["SentTimestamp", "ApproximateReceiveCount"],
      },
      opts.signal,
    );
    return (res.Messages ?? []).map((m) => ({ messageId: m.MessageId, receiptHandle: m.ReceiptHandle }));
  }

  /** DeleteMessageBatch in chunks of 10; `retry` lists the entries the server did not delete. */
  async deleteBatch(messages: readonly WireMessage[]): Promise<{ retry: WireMessage[]; stale: number }> {
    const retry: WireMessage[] = [];
    const calls: Promise<void>[] = [];
    for (let i = 0; i < messages.length; i += 10) {
      const chunk = messages.slice(i, i + 10);
      calls.push(
        this.#call<{ Failed?: { Id: string }[] }>("DeleteMessageBatch", {
          QueueUrl: this.#o.queueUrl,
          Entries: chunk.map((m, j) => ({ Id: String(j), ReceiptHandle: m.receiptHandle })),
        }).then((res) => {
          for (const f of res.Failed ?? []) retry.push(chunk[Number(f.Id)]!);
        }),
      );
    }
    await Promise.all(calls);
    return { retry, stale: 0 };
  }

  destroy(): void {
    this.#agent.destroy();
  }
}
