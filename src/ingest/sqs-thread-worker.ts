/**
 * The SQS thread: makes the runner's SQS calls (sqs-thread-protocol.ts) with the same SqsSource and client the main
 * thread would use, so that the SDK's per-call work (middleware, signing, (de)serialisation, the garbage it makes)
 * runs beside the runner rather than on its thread. Errors are classified here, where the call is made, and cross
 * as data. It decides nothing: what to receive, delete, extend or give back, and when to stop, is the runner's.
 * Anything it throws kills it, which the runner treats as fatal.
 */
import { parentPort, workerData } from "node:worker_threads";
import { createSqsClient, detectSqsProtocol } from "./sqs-client.ts";
import { SqsSource, type Handle, type ReceivedMessage } from "./sqs-source.ts";
import { toErrorData, type FromSqsThread, type ReceivedColumns, type SqsThreadData, type ToSqsThread } from "./sqs-thread-protocol.ts";

const port = parentPort!;
const data = workerData as SqsThreadData;
/** Made by `open`, which the runner sends before any call that needs it. */
let source: SqsSource | undefined;
/** One per signal of the main thread's that has not fired yet; aborted, and forgotten, when it fires. */
const signals = new Map<number, AbortController>();
const ABORTED = AbortSignal.abort();
let deletes = 0;

function send(m: FromSqsThread): void {
  port.postMessage(m);
}

function signalOf(id: number): AbortSignal | undefined {
  if (id === 0) return undefined;
  if (id === -1) return ABORTED;
  let c = signals.get(id);
  if (c === undefined) signals.set(id, (c = new AbortController()));
  return c.signal;
}

/** Handles in the order given: their messageId is their index, which is what a retry names. */
function handlesOf(receiptHandles: readonly string[]): Handle[] {
  const out = new Array<Handle>(receiptHandles.length);
  for (let i = 0; i < receiptHandles.length; i++) out[i] = { messageId: String(i), receiptHandle: receiptHandles[i]! };
  return out;
}

function columns(messages: readonly ReceivedMessage[]): ReceivedColumns {
  const n = messages.length;
  const c: ReceivedColumns = {
    messageId: new Array<string>(n),
    receiptHandle: new Array<string>(n),
    body: new Array<string>(n),
    sentAt: new Array<number | null>(n),
    receiveCount: new Array<number>(n),
    receivedAt: n === 0 ? 0 : messages[0]!.receivedAt.getTime(),
  };
  for (let i = 0; i < n; i++) {
    const m = messages[i]!;
    c.messageId[i] = m.messageId;
    c.receiptHandle[i] = m.receiptHandle;
    c.body[i] = m.body;
    c.sentAt[i] = m.sentAt === null ? null : m.sentAt.getTime();
    c.receiveCount[i] = m.receiveCount;
  }
  return c;
}

async function call(m: Extract<ToSqsThread, { id: number }>): Promise<FromSqsThread> {
  const signal = signalOf(m.signal);
  if (m.type === "detect") {
    const protocol = await detectSqsProtocol({ queueUrl: data.queueUrl, region: m.region, endpoint: m.endpoint, setting: m.setting, ...(signal ? { signal } : {}) });
    return { type: "detected", id: m.id, protocol };
  }
  if (source === undefined) throw new Error(`${m.type} before the SQS client was opened`);
  switch (m.type) {
    case "receive": {
      const messages = await source.receiveBatch({ waitTimeSeconds: m.waitTimeSeconds, visibilityTimeoutSeconds: m.visibilityTimeoutSeconds, max: m.max, signal });
      return { type: "received", id: m.id, messages: columns(messages) };
    }
    case "delete": {
      if (data.exitAfterDeletes !== undefined && ++deletes >= data.exitAfterDeletes) process.exit(1);
      const r = await source.deleteBatch(handlesOf(m.receiptHandles), signal);
      return { type: "deleted", id: m.id, retry: r.retry.map((h) => Number(h.messageId)), stale: r.stale };
    }
    case "extend": {
      const r = await source.extendVisibility(handlesOf(m.receiptHandles), m.seconds, signal);
      return { type: "extended", id: m.id, failed: r.failed };
    }
    case "counts":
      return { type: "counts", id: m.id, counts: await source.counts(signal) };
    case "limits":
      return { type: "limits", id: m.id, limits: await source.queueLimits(signal) };
  }
}

port.on("message", (m: ToSqsThread) => {
  if (m.type === "abort") {
    signals.get(m.signal)?.abort();
    signals.delete(m.signal);
    return;
  }
  if (m.type === "open") {
    source = new SqsSource(createSqsClient(m.client), data.queueUrl);
    return;
  }
  if (m.type === "usage") {
    const u = process.threadCpuUsage();
    send({ type: "usage", cpuUserUs: u.user, cpuSystemUs: u.system });
    return;
  }
  // Calls run concurrently, as on the main thread: eight long polls and the housekeeping calls at once.
  call(m).then(send, (err: unknown) => send({ type: "failed", id: m.id, error: toErrorData(err) }));
});
