import type { SQSClient } from "@aws-sdk/client-sqs";
import { SqsSource } from "../../src/source/sqs-source.ts";

export interface SqsCeilingResult {
  messages: number;
  seconds: number;
  perSecond: number;
  receiveCalls: number;
  emptyReceives: number;
  deleteCalls: number;
  /** CPU time of the consumer (this process, which does nothing else meanwhile) per message, in µs. */
  cpuUsPerMessage: number;
}

/**
 * The SQS ceiling: how fast this SQS server can be drained by a consumer with masq's concurrency that does nothing
 * else. `receivers` loops each long-poll (10 per call, WaitTimeSeconds 1, the same system attributes as masq) and
 * hand every non-empty answer to DeleteMessageBatch without waiting for it, as masq's receivers do not wait for
 * their deletes either. It uses masq's own SqsSource and client settings, so the only difference from masq is
 * the work in between. The clock runs from the first receive to the last delete.
 */
export async function measureSqsCeiling(client: SQSClient, queueUrl: string, opts: { receivers: number; expected: number; timeoutMs?: number }): Promise<SqsCeilingResult> {
  const source = new SqsSource(client, queueUrl);
  const deadline = Date.now() + (opts.timeoutMs ?? 600_000);
  let received = 0;
  let deleted = 0;
  let receiveCalls = 0;
  let emptyReceives = 0;
  let deleteCalls = 0;
  const deletes: Promise<void>[] = [];
  const seen = new Set<string>();

  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  const receiver = async () => {
    while (received < opts.expected) {
      if (Date.now() > deadline) throw new Error(`SQS ceiling: only ${received} of ${opts.expected} messages received before the timeout`);
      const messages = await source.receiveBatch({ waitTimeSeconds: 1, visibilityTimeoutSeconds: 60 });
      receiveCalls++;
      if (messages.length === 0) {
        emptyReceives++;
        continue;
      }
      for (const m of messages) seen.add(m.messageId);
      received += messages.length;
      deleteCalls += Math.ceil(messages.length / 10);
      deletes.push(
        source.deleteBatch(messages).then((r) => {
          if (r.retry.length + r.stale > 0) throw new Error(`SQS ceiling: ${r.retry.length + r.stale} deletes failed`);
          deleted += messages.length;
        }),
      );
    }
  };
  await Promise.all(Array.from({ length: opts.receivers }, receiver));
  await Promise.all(deletes);
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  if (seen.size !== opts.expected || deleted !== received) {
    throw new Error(`SQS ceiling: received ${received} (${seen.size} distinct), deleted ${deleted}, expected ${opts.expected}`);
  }
  return { messages: seen.size, seconds, perSecond: seen.size / seconds, receiveCalls, emptyReceives, deleteCalls, cpuUsPerMessage: (cpu.user + cpu.system) / seen.size };
}
