import assert from "node:assert/strict";
import { test } from "node:test";
import { CreateQueueCommand } from "@aws-sdk/client-sqs";
import { sendBodies } from "../../src/ops/demo.ts";
import { createSqsClient } from "../../src/ingest/sqs-client.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { useMotoFixture } from "../helpers/fixture.ts";
import { motoSkipReason } from "../helpers/moto.ts";
import { expectedCounts, tableCounts, uniqueEvents } from "../helpers/pipeline.ts";
import { TEST_CREDENTIALS } from "../helpers/sqs.ts";

const skip = motoSkipReason();
const fx = useMotoFixture(skip);

for (const protocol of ["query", "json"] as const) {
  test(`MASQ_SQS_PROTOCOL=${protocol} drains a queue on moto's SQS, with only QUEUE_URL naming the endpoint`, { skip }, async () => {
    await fx.db.pool.query("TRUNCATE public.user_logins, masq.ingest_ledger, masq.quarantine");
    const client = createSqsClient({ region: "us-east-1", endpoint: fx.moto.endpoint, credentials: TEST_CREDENTIALS, protocol });
    const created = await client.send(new CreateQueueCommand({ QueueName: `login-queue-${protocol}` }));
    const queueUrl = created.QueueUrl!;
    const events = uniqueEvents(400, 41);
    await sendBodies(client, queueUrl, events.map((e) => e.body));
    client.destroy();

    const env = masqEnv({ queueUrl, sqsEndpoint: "", databaseUrl: fx.pgdb.url, extra: { MASQ_SQS_PROTOCOL: protocol, MASQ_WAIT_TIME_SECONDS: "1" } });
    delete env.AWS_ENDPOINT_URL_SQS;
    const proc = spawnMasq(["run", "--drain"], env);
    const { code } = await proc.exited;
    assert.equal(code, 0, proc.lines.slice(-10).join("\n"));
    const want = expectedCounts(events);
    const c = await tableCounts(fx.db);
    assert.equal(c.rows, want.valid);
    assert.equal(c.distinctUsers, want.valid);
    assert.deepEqual(c.quarantine, want.byReason);
  });
}

test("detectSqsProtocol finds JSON on fauxqs, and refuses a forced Query there naming MASQ_SQS_PROTOCOL", async () => {
  const { startTestSqs } = await import("../helpers/sqs.ts");
  const { detectSqsProtocol } = await import("../../src/ingest/sqs-client.ts");
  const sqs = await startTestSqs();
  try {
    const opts = { queueUrl: sqs.newQueue(), region: "us-east-1", endpoint: sqs.endpoint, credentials: TEST_CREDENTIALS };
    assert.equal(await detectSqsProtocol({ ...opts, setting: "auto" }), "json");
    assert.equal(await detectSqsProtocol({ ...opts, setting: "json" }), "json");
    await assert.rejects(detectSqsProtocol({ ...opts, setting: "query" }), (err: Error) => err.name === "ConfigError" && /^MASQ_SQS_PROTOCOL: is query/.test(err.message));
  } finally {
    await sqs.close();
  }
});

test("the protocol setting really changes the wire format: fauxqs speaks only JSON and refuses Query requests", async () => {
  const { startTestSqs } = await import("../helpers/sqs.ts");
  const { SqsSource } = await import("../../src/ingest/sqs-source.ts");
  const sqs = await startTestSqs();
  try {
    const queueUrl = sqs.newQueue();
    const json = new SqsSource(sqs.client, queueUrl);
    assert.deepEqual(await json.counts(), { visible: 0, inFlight: 0, delayed: 0 });
    const queryClient = createSqsClient({ region: "us-east-1", endpoint: sqs.endpoint, credentials: TEST_CREDENTIALS, protocol: "query" });
    // Not retried as an outage: it is a setting to fix, and the error says which.
    await assert.rejects(new SqsSource(queryClient, queueUrl).counts(), (err: Error) => err.name === "ConfigError" && /MASQ_SQS_PROTOCOL/.test(err.message));
    queryClient.destroy();
  } finally {
    await sqs.close();
  }
});
