import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { TransientError } from "../errors.ts";
import { classifySqsError } from "./sqs-errors.ts";

/** A message as masq holds it between receive and delete. The body is raw: it never leaves the process. */
export interface ReceivedMessage {
  messageId: string;
  receiptHandle: string;
  body: string;
  /** The SentTimestamp system attribute: when SQS accepted the message; null if the server did not report it. */
  sentAt: Date | null;
  receivedAt: Date;
  receiveCount: number;
}

export interface Handle {
  messageId: string;
  receiptHandle: string;
}

export interface QueueCounts {
  visible: number;
  inFlight: number;
  delayed: number;
}

/** Receipt handles that are no longer valid: the message will come back (or is gone); retrying cannot help. */
const STALE_HANDLE = new Set(["ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"]);

/** Per-call ceiling for calls that are not long polls: a hung connection must fail and be retried. */
const CALL_TIMEOUT_MS = 15_000;

/**
 * Runs one SDK call under a signal that aborts with the caller's signal or after `ms`, and drops the timer and the
 * listener as soon as the call settles. (AbortSignal.timeout cannot be cancelled: at thousands of calls a second its
 * timers, and AbortSignal.any's links from the long-lived shutdown signal, kept every finished call's signal alive
 * for the whole timeout and then fired for nothing; measured by the benchmark as CPU and heap.)
 */
async function withTimeout<T>(signal: AbortSignal | undefined, ms: number, call: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new DOMException(`no answer within ${ms} ms`, "TimeoutError")), ms);
  const forward = () => ac.abort(signal?.reason);
  if (signal?.aborted) forward();
  else signal?.addEventListener("abort", forward, { once: true });
  try {
    return await call(ac.signal);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", forward);
  }
}

/**
 * Deletes and visibility changes in flight at once, per source. A committed batch of 1,000 is 100 delete calls; fired
 * all at once they took every socket and the long polls queued behind them, so receiving stalled after each commit
 * (with 20 ms to SQS, a quarter of the throughput at 16 receivers). Capped, they leave the receivers their sockets:
 * the client has receivers + 32 (commands/run.ts).
 */
export const HOUSEKEEPING_CALLS = 32;

/** At most `max` calls at once; the rest wait their turn in order. */
class CallLimiter {
  private readonly max: number;
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(max: number) {
    this.max = max;
  }

  async run<T>(call: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await call();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * The SQS end of the pipeline: long-poll receive, batched delete and visibility extension, queue counts.
 * Every call takes an AbortSignal (shutdown) and has a timeout; errors come out as TransientError or FatalError.
 */
export class SqsSource {
  readonly client: SQSClient;
  readonly queueUrl: string;
  private readonly housekeeping = new CallLimiter(HOUSEKEEPING_CALLS);

  constructor(client: SQSClient, queueUrl: string) {
    this.client = client;
    this.queueUrl = queueUrl;
  }

  async receiveBatch(opts: { waitTimeSeconds: number; visibilityTimeoutSeconds: number; max?: number; signal?: AbortSignal }): Promise<ReceivedMessage[]> {
    let res;
    try {
      res = await withTimeout(opts.signal, opts.waitTimeSeconds * 1000 + CALL_TIMEOUT_MS, (abortSignal) =>
        this.client.send(
          new ReceiveMessageCommand({
            QueueUrl: this.queueUrl,
            MaxNumberOfMessages: Math.min(10, opts.max ?? 10),
            WaitTimeSeconds: opts.waitTimeSeconds,
            VisibilityTimeout: opts.visibilityTimeoutSeconds,
            MessageSystemAttributeNames: ["SentTimestamp", "ApproximateReceiveCount"],
          }),
          { abortSignal },
        ),
      );
    } catch (err) {
      throw classifySqsError(err, "ReceiveMessage", this.queueUrl);
    }
    const receivedAt = new Date();
    return (res.Messages ?? []).flatMap((m) => {
      if (m.MessageId === undefined || m.ReceiptHandle === undefined) return [];
      const sent = Number(m.Attributes?.SentTimestamp);
      return [
        {
          messageId: m.MessageId,
          receiptHandle: m.ReceiptHandle,
          body: m.Body ?? "",
          // Beyond ±8.64e15 ms a Date is invalid; an odd server must not hand masq a date it cannot format.
          sentAt: Number.isFinite(sent) && sent > 0 && sent < 8.64e15 ? new Date(sent) : null,
          receivedAt,
          receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? 1),
        },
      ];
    });
  }

  /**
   * Deletes in batches of ten, up to HOUSEKEEPING_CALLS chunks at once. Returns the handles that failed transiently
   * (retry them); stale handles are dropped, since their messages will be redelivered and the ledger makes that
   * harmless.
   */
  async deleteBatch(handles: readonly Handle[], signal?: AbortSignal): Promise<{ retry: Handle[]; stale: number }> {
    const results = await Promise.all(
      chunks(handles, 10).map(async (chunk) => {
        try {
          const res = await this.housekeeping.run(() =>
            withTimeout(signal, CALL_TIMEOUT_MS, (abortSignal) =>
              this.client.send(
                new DeleteMessageBatchCommand({
                  QueueUrl: this.queueUrl,
                  Entries: chunk.map((h, i) => ({ Id: String(i), ReceiptHandle: h.receiptHandle })),
                }),
                { abortSignal },
              ),
            ),
          );
          const retry: Handle[] = [];
          let stale = 0;
          for (const f of res.Failed ?? []) {
            const h = chunk[Number(f.Id)];
            if (h === undefined) continue;
            if (STALE_HANDLE.has(f.Code ?? "")) stale++;
            else retry.push(h);
          }
          return { retry, stale };
        } catch (err) {
          const e = classifySqsError(err, "DeleteMessageBatch", this.queueUrl);
          if (!(e instanceof TransientError)) throw e;
          return { retry: [...chunk], stale: 0 };
        }
      }),
    );
    return { retry: results.flatMap((r) => r.retry), stale: results.reduce((n, r) => n + r.stale, 0) };
  }

  /** Extends the visibility of held messages, ten per call. Failures are reported, not thrown: a lapse is safe. */
  async extendVisibility(handles: readonly Handle[], seconds: number, signal?: AbortSignal): Promise<{ failed: number }> {
    const failed = await Promise.all(
      chunks(handles, 10).map(async (chunk) => {
        try {
          const res = await this.housekeeping.run(() =>
            withTimeout(signal, CALL_TIMEOUT_MS, (abortSignal) =>
              this.client.send(
                new ChangeMessageVisibilityBatchCommand({
                  QueueUrl: this.queueUrl,
                  Entries: chunk.map((h, i) => ({ Id: String(i), ReceiptHandle: h.receiptHandle, VisibilityTimeout: seconds })),
                }),
                { abortSignal },
              ),
            ),
          );
          return res.Failed?.length ?? 0;
        } catch {
          return chunk.length;
        }
      }),
    );
    return { failed: failed.reduce((a, b) => a + b, 0) };
  }

  async counts(signal?: AbortSignal): Promise<QueueCounts> {
    try {
      const res = await withTimeout(signal, CALL_TIMEOUT_MS, (abortSignal) =>
        this.client.send(
          new GetQueueAttributesCommand({
            QueueUrl: this.queueUrl,
            AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"],
          }),
          { abortSignal },
        ),
      );
      const a = res.Attributes ?? {};
      return {
        visible: Number(a.ApproximateNumberOfMessages ?? 0),
        inFlight: Number(a.ApproximateNumberOfMessagesNotVisible ?? 0),
        delayed: Number(a.ApproximateNumberOfMessagesDelayed ?? 0),
      };
    } catch (err) {
      throw classifySqsError(err, "GetQueueAttributes", this.queueUrl);
    }
  }

  /** The queue's retention period in seconds: ledger rows older than this can never match a redelivery. */
  async retentionSeconds(signal?: AbortSignal): Promise<number> {
    try {
      const res = await withTimeout(signal, CALL_TIMEOUT_MS, (abortSignal) =>
        this.client.send(new GetQueueAttributesCommand({ QueueUrl: this.queueUrl, AttributeNames: ["MessageRetentionPeriod"] }), { abortSignal }),
      );
      const n = Number(res.Attributes?.MessageRetentionPeriod);
      return Number.isFinite(n) && n > 0 ? n : 14 * 86_400;
    } catch (err) {
      throw classifySqsError(err, "GetQueueAttributes", this.queueUrl);
    }
  }
}
