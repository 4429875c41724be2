import { ChangeMessageVisibilityBatchCommand, DeleteMessageBatchCommand, GetQueueAttributesCommand, type MessageSystemAttributeName, ReceiveMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { TransientError, type FatalError } from "../errors.ts";
import { newSqsLane, type SqsLane } from "./sqs-client.ts";
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

/** What the queue's attributes say about it, asked once at start. */
export interface QueueLimits {
  /** MessageRetentionPeriod: how long an id can be redelivered (the ledger is pruned a day after). */
  retentionSeconds: number;
  /** MaximumMessageSize: SQS refuses a larger body, so a receive brings at most ten of these. */
  maxMessageBytes: number;
}

export interface QueueCounts {
  visible: number;
  inFlight: number;
  delayed: number;
}

/**
 * What the runner needs of its queue: SqsSource below, on the runner's thread, or SqsThread (ingest/sqs-thread.ts),
 * the same calls made on a thread of their own. Errors are TransientError, ConfigError or FatalError either way.
 */
export interface QueueSource {
  readonly queueUrl: string;
  receiveBatch(opts: { waitTimeSeconds: number; visibilityTimeoutSeconds: number; max?: number; signal?: AbortSignal }): Promise<ReceivedMessage[]>;
  deleteBatch(handles: readonly Handle[], signal?: AbortSignal): Promise<{ retry: Handle[]; stale: number }>;
  extendVisibility(handles: readonly Handle[], seconds: number, signal?: AbortSignal): Promise<{ failed: number }>;
  counts(signal?: AbortSignal): Promise<QueueCounts>;
  queueLimits(signal?: AbortSignal): Promise<QueueLimits>;
  /** Settles when the source can no longer work (its thread died): fatal to the runner. */
  readonly failure?: Promise<FatalError> | undefined;
}

/** Receipt handles that are no longer valid: the message will come back (or is gone); retrying cannot help. */
const STALE_HANDLE = new Set(["ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"]);

/**
 * Per-call ceiling for calls that are not long polls, from the request's start to its answer's headers (the SDK's
 * request timeout): a hung connection must fail and be retried.
 */
const CALL_TIMEOUT_MS = 15_000;

/** The largest body SQS accepts on any queue (MaximumMessageSize can be set from 1 KiB to this). */
export const SQS_MAX_MESSAGE_BYTES = 1024 * 1024;

/** Shared by every receive: the SDK serialises the input, never changes it. */
const SYSTEM_ATTRIBUTES: MessageSystemAttributeName[] = ["SentTimestamp", "ApproximateReceiveCount"];
/** Batch entry ids: an entry's index in its chunk of ten. */
const ENTRY_IDS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

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
export class SqsSource implements QueueSource {
  readonly client: SQSClient;
  readonly queueUrl: string;
  private readonly housekeeping = new CallLimiter(HOUSEKEEPING_CALLS);
  /** Lanes not carrying a call now; as many are made as calls run at once (receivers + HOUSEKEEPING_CALLS at most). */
  private readonly idleLanes: SqsLane[] = [];

  constructor(client: SQSClient, queueUrl: string) {
    this.client = client;
    this.queueUrl = queueUrl;
  }

  /**
   * Runs one call on a lane of its own (sqs-client.ts), which gives the request the caller's signal and `ms` as its
   * timeout. A lane's client sends without per-call options, so the SDK's cached middleware chain serves every call
   * (with options it resolves the chain again, and drops its cache), and no AbortController or timer is made per call.
   */
  private async onLane<T>(signal: AbortSignal | undefined, ms: number, call: (client: SQSClient) => Promise<T>): Promise<T> {
    const lane = this.idleLanes.pop() ?? newSqsLane(this.client);
    lane.handler.signal = signal;
    lane.handler.timeoutMs = ms;
    try {
      return await call(lane.client);
    } finally {
      lane.handler.signal = undefined;
      this.idleLanes.push(lane);
    }
  }

  async receiveBatch(opts: { waitTimeSeconds: number; visibilityTimeoutSeconds: number; max?: number; signal?: AbortSignal }): Promise<ReceivedMessage[]> {
    let res;
    try {
      res = await this.onLane(opts.signal, opts.waitTimeSeconds * 1000 + CALL_TIMEOUT_MS, (client) =>
        client.send(
          new ReceiveMessageCommand({
            QueueUrl: this.queueUrl,
            MaxNumberOfMessages: Math.min(10, opts.max ?? 10),
            WaitTimeSeconds: opts.waitTimeSeconds,
            VisibilityTimeout: opts.visibilityTimeoutSeconds,
            MessageSystemAttributeNames: SYSTEM_ATTRIBUTES,
          }),
        ),
      );
    } catch (err) {
      throw classifySqsError(err, "ReceiveMessage", this.queueUrl);
    }
    const messages: ReceivedMessage[] = [];
    if (res.Messages === undefined) return messages;
    const receivedAt = new Date();
    for (const m of res.Messages) {
      if (m.MessageId === undefined || m.ReceiptHandle === undefined) continue;
      const sent = Number(m.Attributes?.SentTimestamp);
      messages.push({
        messageId: m.MessageId,
        receiptHandle: m.ReceiptHandle,
        body: m.Body ?? "",
        // Beyond ±8.64e15 ms a Date is invalid; an odd server must not hand masq a date it cannot format.
        sentAt: Number.isFinite(sent) && sent > 0 && sent < 8.64e15 ? new Date(sent) : null,
        receivedAt,
        receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? 1),
      });
    }
    return messages;
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
            this.onLane(signal, CALL_TIMEOUT_MS, (client) =>
              client.send(
                new DeleteMessageBatchCommand({
                  QueueUrl: this.queueUrl,
                  Entries: chunk.map((h, i) => ({ Id: ENTRY_IDS[i]!, ReceiptHandle: h.receiptHandle })),
                }),
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
            this.onLane(signal, CALL_TIMEOUT_MS, (client) =>
              client.send(
                new ChangeMessageVisibilityBatchCommand({
                  QueueUrl: this.queueUrl,
                  Entries: chunk.map((h, i) => ({ Id: ENTRY_IDS[i]!, ReceiptHandle: h.receiptHandle, VisibilityTimeout: seconds })),
                }),
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
      const res = await this.onLane(signal, CALL_TIMEOUT_MS, (client) =>
        client.send(
          new GetQueueAttributesCommand({
            QueueUrl: this.queueUrl,
            AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"],
          }),
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
  async queueLimits(signal?: AbortSignal): Promise<QueueLimits> {
    try {
      const res = await this.onLane(signal, CALL_TIMEOUT_MS, (client) =>
        client.send(new GetQueueAttributesCommand({ QueueUrl: this.queueUrl, AttributeNames: ["MessageRetentionPeriod", "MaximumMessageSize"] })),
      );
      // What an endpoint does not report is assumed at its largest: the longest retention, SQS's largest message.
      const retention = Number(res.Attributes?.MessageRetentionPeriod);
      const size = Number(res.Attributes?.MaximumMessageSize);
      return {
        retentionSeconds: Number.isFinite(retention) && retention > 0 ? retention : 14 * 86_400,
        maxMessageBytes: Number.isInteger(size) && size >= 1024 ? Math.min(size, SQS_MAX_MESSAGE_BYTES) : SQS_MAX_MESSAGE_BYTES,
      };
    } catch (err) {
      throw classifySqsError(err, "GetQueueAttributes", this.queueUrl);
    }
  }
}
