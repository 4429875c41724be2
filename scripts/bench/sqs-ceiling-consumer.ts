/**
 * The SQS ceiling's consumer as a process of its own, started cold like masq (see sqs-ceiling.ts). Its SQS client
 * is configured as `masq run` configures its own. Prints its result as one JSON line.
 */
import { BENCH_CREDENTIALS } from "./environment.ts";
import { measureSqsCeiling } from "./sqs-ceiling.ts";
import { createSqsClient } from "../../src/source/sqs-client.ts";

const receivers = Number(process.env.CEILING_RECEIVERS);
const client = createSqsClient({
  region: "us-east-1",
  endpoint: process.env.CEILING_ENDPOINT,
  credentials: BENCH_CREDENTIALS,
  maxSockets: receivers + 32,
  requestTimeoutMs: 1000 + 15_000,
});
const result = await measureSqsCeiling(client, process.env.CEILING_QUEUE_URL!, { receivers, expected: Number(process.env.CEILING_EXPECTED) });
client.destroy();
process.stdout.write(`${JSON.stringify(result)}\n`);
