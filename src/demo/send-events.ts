import { SendMessageBatchCommand, type SQSClient } from "@aws-sdk/client-sqs";

/** Sends bodies ten per call, several calls at once. For the demo, the tests and the benchmark. */
export async function sendBodies(client: SQSClient, queueUrl: string, bodies: readonly string[], concurrency = 16): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (;;) {
      const start = next;
      next += 10;
      if (start >= bodies.length) return;
      const entries = bodies.slice(start, start + 10).map((b, i) => ({ Id: String(i), MessageBody: b }));
      const res = await client.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries }));
      if ((res.Failed ?? []).length > 0) throw new Error(`SendMessageBatch: ${res.Failed!.length} entries failed (${res.Failed![0]!.Code})`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}
