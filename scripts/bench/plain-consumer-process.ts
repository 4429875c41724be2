/**
 * A consumer built the common Node way, for comparison only: the `sqs-consumer` package with a default SDK client,
 * and node-postgres. Each received batch (up to 10) is parsed and written with one plain multi-row INSERT, then
 * sqs-consumer deletes it. No ledger, vault, masking or validation beyond JSON.parse. It drains: it stops on the first
 * empty receive (sqs-consumer's "empty" event), closes the pool and exits. Prints its usage as one JSON line.
 * Run through plain-consumer.ts.
 */
import { SQSClient, type Message } from "@aws-sdk/client-sqs";
import pg from "pg";
import { Consumer } from "sqs-consumer";
import { BENCH_CREDENTIALS } from "./environment.ts";
import { PLAIN_TABLE, plainRow } from "./plain-consumer.ts";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
const sqs = new SQSClient({ region: "us-east-1", endpoint: process.env.PLAIN_ENDPOINT, credentials: BENCH_CREDENTIALS });
let inserted = 0;

async function insertBatch(messages: Message[]): Promise<Message[]> {
  const values: unknown[] = [];
  const tuples: string[] = [];
  for (const m of messages) {
    const row = plainRow(m.MessageId!, m.Body ?? "");
    if (row === null) continue;
    tuples.push(`(${row.map((_, i) => `$${values.length + i + 1}`).join(", ")})`);
    values.push(...row);
  }
  if (tuples.length > 0) {
    await pool.query(`INSERT INTO ${PLAIN_TABLE} (message_id, user_id, device_type, ip, device_id, locale, app_version, create_date) VALUES ${tuples.join(", ")}`, values);
    inserted += tuples.length;
  }
  return messages;
}

const consumer = Consumer.create({
  queueUrl: process.env.PLAIN_QUEUE_URL!,
  sqs,
  batchSize: 10,
  // sqs-consumer's default is 20 s; a drain would then wait 20 s on its last, empty poll. 1 s, as the ceiling.
  waitTimeSeconds: 1,
  visibilityTimeout: 60,
  handleMessageBatch: insertBatch,
});
let failed: Error | undefined;
const stopped = new Promise<void>((resolve) => consumer.on("stopped", () => resolve()));
consumer.on("empty", () => consumer.stop());
const fail = (err: Error) => {
  failed = err;
  consumer.stop();
};
consumer.on("error", fail);
consumer.on("processing_error", fail);
consumer.start();
await stopped;
await pool.end();
sqs.destroy();
if (failed !== undefined) {
  process.stderr.write(`plain consumer: ${failed.message}\n`);
  process.exit(1);
}
const usage = process.resourceUsage();
process.stdout.write(`${JSON.stringify({ inserted, cpuUs: usage.userCPUTime + usage.systemCPUTime, maxRssMb: Math.round(usage.maxRSS / 1024) })}\n`);
