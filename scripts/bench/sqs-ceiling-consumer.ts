/**
 * The SQS ceiling's consumer (CEILING_CLIENT=sdk) or the wire floor's (wire) as a process of its own, started cold
 * like masq (see sqs-ceiling.ts). The SDK's client is configured as `masq run` configures its own; the wire floor's
 * is wire-source.ts, with as many sockets. Prints its result as one JSON line.
 */
import { BENCH_CREDENTIALS } from "./environment.ts";
import { measureSqsCeiling, type CeilingSource } from "./sqs-ceiling.ts";
import { WireSource } from "./wire-source.ts";
import { createSqsClient } from "../../src/ingest/sqs-client.ts";
import { SqsSource } from "../../src/ingest/sqs-source.ts";

const receivers = Number(process.env.CEILING_RECEIVERS);
const endpoint = process.env.CEILING_ENDPOINT!;
const queueUrl = process.env.CEILING_QUEUE_URL!;
let source: CeilingSource;
let close: () => void;
if (process.env.CEILING_CLIENT === "wire") {
  const wire = new WireSource({ endpoint, queueUrl, region: "us-east-1", credentials: BENCH_CREDENTIALS, maxSockets: receivers + 32 });
  source = wire;
  close = () => wire.destroy();
} else {
  const client = createSqsClient({ region: "us-east-1", endpoint, credentials: BENCH_CREDENTIALS, maxSockets: receivers + 32, requestTimeoutMs: 1000 + 15_000 });
  source = new SqsSource(client, queueUrl);
  close = () => client.destroy();
}
const result = await measureSqsCeiling(source, { receivers, expected: Number(process.env.CEILING_EXPECTED) });
close();
process.stdout.write(`${JSON.stringify(result)}\n`);
