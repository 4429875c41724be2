import { CreateQueueCommand, DeleteQueueCommand, SendMessageBatchCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { randomBytes } from "node:crypto";

export interface FilledQueue {
  queueUrl: string;
  /**
   * Per message id, when its SendMessageBatch call was issued (ms since epoch): an upper bound on how early SQS
   * can have stamped it (SentTimestamp), so lag computed from it is never understated by more than one call.
   */
  sentAt: Map<string, number>;
  seconds: number;
}

/** A new, empty queue with the given visibility timeout (the queue's default; masq asks for its own anyway). */
export async function createQueue(client: SQSClient, prefix: string): Promise<string> {
  const res = await client.send(new CreateQueueCommand({ QueueName: `${prefix}-${randomBytes(4).toString("hex")}` }));
  if (res.QueueUrl === undefined) throw new Error("CreateQueue returned no QueueUrl");
  return res.QueueUrl;
}

export async function deleteQueue(client: SQSClient, queueUrl: string): Promise<void> {
  await client.send(new DeleteQueueCommand({ QueueUrl: queueUrl }));
}

/** Fills a fresh queue with the bodies: SendMessageBatch, ten per call, `concurrency` calls at once. */
export async function fillQueue(client: SQSClient, prefix: string, bodies: readonly string[], concurrency = 16): Promise<FilledQueue> {
  const queueUrl = await createQueue(client, prefix);
  const sentAt = new Map<string, number>();
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    for (;;) {
      const start = next;
      next += 10;
      if (start >= bodies.length) return;
      const entries = bodies.slice(start, start + 10).map((b, i) => ({ Id: String(i), MessageBody: b }));
      const issued = Date.now();
      const res = await client.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries }));
      if ((res.Failed ?? []).length > 0) throw new Error(`SendMessageBatch: ${res.Failed!.length} entries failed (${res.Failed![0]!.Code})`);
      for (const s of res.Successful ?? []) if (s.MessageId !== undefined) sentAt.set(s.MessageId, issued);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  if (sentAt.size !== bodies.length) throw new Error(`sent ${bodies.length} messages but got ${sentAt.size} message ids back`);
  return { queueUrl, sentAt, seconds: (performance.now() - started) / 1000 };
}
