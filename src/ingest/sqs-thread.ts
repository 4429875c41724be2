import { Worker } from "node:worker_threads";
import type { SqsProtocol, SqsProtocolSetting } from "../settings/config.ts";
import type { SqsClientOptions } from "./sqs-client.ts";
import { FatalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Handle, QueueCounts, QueueLimits, QueueSource, ReceivedMessage } from "./sqs-source.ts";
import type { ThreadUsage } from "./prepare-protocol.ts";
import { fromErrorData, type FromSqsThread, type SqsThreadData, type ToSqsThread } from "./sqs-thread-protocol.ts";

/** The worker's module beside this one: .ts when masq runs from its sources, .js when compiled. */
const WORKER_URL = new URL(import.meta.url.endsWith(".ts") ? "./sqs-thread-worker.ts" : "./sqs-thread-worker.js", import.meta.url);

type Answer = Exclude<FromSqsThread, { type: "failed" | "usage" }>;
type Call = Extract<ToSqsThread, { id: number }>;
/** A call as the runner makes it; the id is given when it is posted. */
type CallBody = Call extends infer C ? (C extends Call ? Omit<C, "id"> : never) : never;

/**
 * The runner's SQS source with its calls made on a thread of their own (sqs-thread-worker.ts): the same interface
 * as SqsSource, so the runner stays the one owner of flow control, visibility, drains and shutdown, and holds every
 * receipt handle. Errors come back classified as the thread's SqsSource classified them. A thread that dies fails
 * every call under way and every call after, and settles `failure`: the runner stops, and since deletes only ever
 * follow commits, nothing uncommitted is deleted.
 */
export class SqsThread implements QueueSource {
  readonly queueUrl: string;
  readonly failure: Promise<FatalError>;
  private readonly worker: Worker;
  private readonly waiting = new Map<number, { resolve: (a: Answer) => void; reject: (e: Error) => void }>();
  /** The runner's few AbortSignals (receive, stop, hard abort), each named once by a number the thread knows. */
  private readonly signalIds = new WeakMap<AbortSignal, number>();
  private nextSignal = 1;
  private nextId = 1;
  private failed: FatalError | undefined;
  private fail!: (e: FatalError) => void;
  private closing = false;
  private usage: ((u: ThreadUsage) => void) | undefined;

  constructor(opts: { data: SqsThreadData; logger: Logger }) {
    this.queueUrl = opts.data.queueUrl;
    this.failure = new Promise((resolve) => (this.fail = resolve));
    this.worker = new Worker(WORKER_URL, { name: "sqs", workerData: opts.data });
    this.worker.on("message", (m: FromSqsThread) => {
      if (m.type === "usage") return this.usage?.({ name: "sqs", cpuUserUs: m.cpuUserUs, cpuSystemUs: m.cpuSystemUs });
      const w = this.waiting.get(m.id);
      if (w === undefined) return;
      this.waiting.delete(m.id);
      if (m.type === "failed") w.reject(fromErrorData(m.error));
      else w.resolve(m);
    });
    // Only the error's name: its message could quote a request.
    this.worker.on("error", (err: Error) => this.died(opts.logger, `threw ${err.name}`));
    this.worker.on("exit", (code) => {
      if (!this.closing) this.died(opts.logger, `exited with code ${code}`);
    });
  }

  /** The wire protocol the queue's endpoint speaks (detectSqsProtocol, on the thread), or its classified error. */
  async detectProtocol(opts: { region: string; endpoint: string | undefined; setting: SqsProtocolSetting; signal?: AbortSignal }): Promise<SqsProtocol> {
    const a = await this.call({ type: "detect", signal: 0, region: opts.region, endpoint: opts.endpoint, setting: opts.setting }, opts.signal);
    if (a.type !== "detected") throw this.mismatch(a);
    return a.protocol;
  }

  /** Makes the thread's client; every call after this one uses it. */
  open(client: Omit<SqsClientOptions, "credentials">): void {
    if (this.failed === undefined) this.worker.postMessage({ type: "open", client } satisfies ToSqsThread);
  }

  async receiveBatch(opts: { waitTimeSeconds: number; visibilityTimeoutSeconds: number; max?: number; signal?: AbortSignal }): Promise<ReceivedMessage[]> {
    const a = await this.call(
      { type: "receive", signal: 0, waitTimeSeconds: opts.waitTimeSeconds, visibilityTimeoutSeconds: opts.visibilityTimeoutSeconds, max: opts.max ?? 10 },
      opts.signal,
    );
    if (a.type !== "received") throw this.mismatch(a);
    const c = a.messages;
    const n = c.messageId.length;
    const out = new Array<ReceivedMessage>(n);
    const receivedAt = new Date(c.receivedAt);
    for (let i = 0; i < n; i++) {
      const sentAt = c.sentAt[i]!;
      out[i] = {
        messageId: c.messageId[i]!,
        receiptHandle: c.receiptHandle[i]!,
        body: c.body[i]!,
        sentAt: sentAt === null ? null : new Date(sentAt),
        receivedAt,
        receiveCount: c.receiveCount[i]!,
      };
    }
    return out;
  }

  async deleteBatch(handles: readonly Handle[], signal?: AbortSignal): Promise<{ retry: Handle[]; stale: number }> {
    const a = await this.call({ type: "delete", signal: 0, receiptHandles: handles.map((h) => h.receiptHandle) }, signal);
    if (a.type !== "deleted") throw this.mismatch(a);
    return { retry: a.retry.map((i) => handles[i]!), stale: a.stale };
  }

  async extendVisibility(handles: readonly Handle[], seconds: number, signal?: AbortSignal): Promise<{ failed: number }> {
    let a: Answer;
    try {
      a = await this.call({ type: "extend", signal: 0, receiptHandles: handles.map((h) => h.receiptHandle), seconds }, signal);
    } catch {
      // As SqsSource: failures are reported, not thrown (a lapse is safe); a dead thread is reported by `failure`.
      return { failed: handles.length };
    }
    if (a.type !== "extended") throw this.mismatch(a);
    return { failed: a.failed };
  }

  async counts(signal?: AbortSignal): Promise<QueueCounts> {
    const a = await this.call({ type: "counts", signal: 0 }, signal);
    if (a.type !== "counts") throw this.mismatch(a);
    return a.counts;
  }

  async queueLimits(signal?: AbortSignal): Promise<QueueLimits> {
    const a = await this.call({ type: "limits", signal: 0 }, signal);
    if (a.type !== "limits") throw this.mismatch(a);
    return a.limits;
  }

  /** The thread's CPU time, then it stops. Called once the runner has stopped. */
  async close(): Promise<ThreadUsage | undefined> {
    if (this.closing) return undefined;
    this.closing = true;
    const usage = await new Promise<ThreadUsage | undefined>((resolve) => {
      if (this.failed !== undefined || this.worker.threadId === -1) return resolve(undefined);
      this.usage = resolve;
      // A thread that does not answer promptly is not waited for.
      setTimeout(() => resolve(undefined), 2_000).unref();
      this.worker.postMessage({ type: "usage" } satisfies ToSqsThread);
    });
    await this.worker.terminate();
    for (const w of this.waiting.values()) w.reject(new FatalError("the SQS thread was closed"));
    this.waiting.clear();
    return usage;
  }

  private call(body: CallBody, signal: AbortSignal | undefined): Promise<Answer> {
    if (this.failed !== undefined) return Promise.reject(this.failed);
    const id = this.nextId++;
    const m = { ...body, id, signal: this.signalId(signal) };
    return new Promise<Answer>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage(m);
    });
  }

  /**
   * The signal's number, its abort posted when it fires; -1 when it already has (the call starts aborted). The
   * thread forgets a number once aborted, so short-lived signals (a readiness probe's timeout) leave nothing behind.
   */
  private signalId(signal: AbortSignal | undefined): number {
    if (signal === undefined) return 0;
    if (signal.aborted) return -1;
    const id = this.signalIds.get(signal);
    if (id !== undefined) return id;
    const n = this.nextSignal++;
    this.signalIds.set(signal, n);
    signal.addEventListener(
      "abort",
      () => {
        if (this.failed === undefined && !this.closing) this.worker.postMessage({ type: "abort", signal: n } satisfies ToSqsThread);
      },
      { once: true },
    );
    return n;
  }

  private died(logger: Logger, how: string): void {
    if (this.failed === undefined) {
      this.failed = new FatalError(`the SQS thread ${how}`, {
        what: `the SQS thread stopped (${how})`,
        hint: "nothing uncommitted was deleted and those messages will be redelivered; start masq again, and report this as a bug in masq",
      });
      logger.error({ thread: "sqs", how }, "the SQS thread stopped");
      this.fail(this.failed);
    }
    for (const w of this.waiting.values()) w.reject(this.failed);
    this.waiting.clear();
  }

  private mismatch(a: Answer): FatalError {
    return new FatalError(`the SQS thread answered a call with ${a.type}`);
  }
}
