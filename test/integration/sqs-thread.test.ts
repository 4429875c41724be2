import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { sendBodies } from "../../src/ops/demo.ts";
import { ConfigError, TransientError } from "../../src/errors.ts";
import { SqsThread } from "../../src/ingest/sqs-thread.ts";
import { createLogger } from "../../src/log.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { expectedCounts, tableCounts, uniqueEvents } from "../helpers/pipeline.ts";
import { TEST_CREDENTIALS } from "../helpers/sqs.ts";

const fx = usePipelineFixture();

const TUNING = { MASQ_BATCH_SIZE: "50", MASQ_RECEIVERS: "4", MASQ_VISIBILITY_TIMEOUT: "5", MASQ_WAIT_TIME_SECONDS: "1", MASQ_BATCH_WAIT_MS: "50" };

/** An SqsThread in this process, on the fixture's fauxqs; the thread reads credentials from the environment, as masq's does. */
function thread(queueUrl: string): SqsThread {
  const t = new SqsThread({ data: { queueUrl }, logger: createLogger("silent") });
  t.open({ region: "us-east-1", endpoint: fx.sqs.endpoint, protocol: "json", maxAttempts: 1, queueUrl });
  return t;
}

describe("the SQS thread", () => {
  const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
  before(() => {
    process.env.AWS_ACCESS_KEY_ID = TEST_CREDENTIALS.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = TEST_CREDENTIALS.secretAccessKey;
  });
  after(() => {
    for (const [k, v] of [["AWS_ACCESS_KEY_ID", saved.id], ["AWS_SECRET_ACCESS_KEY", saved.secret]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  test("receives bodies byte for byte, deletes by receipt handle, and reports counts, retention and the largest message", async () => {
    const queueUrl = fx.sqs.newQueue({ MessageRetentionPeriod: "7200", MaximumMessageSize: "131072" });
    const bodies = ['{"a":1}', "ünïcödé ✓ €", "x".repeat(100_000)];
    await sendBodies(fx.sqs.client, queueUrl, bodies);
    const source = thread(queueUrl);
    try {
      assert.equal(await source.detectProtocol({ region: "us-east-1", endpoint: fx.sqs.endpoint, setting: "auto" }), "json");
      assert.deepEqual(await source.queueLimits(), { retentionSeconds: 7200, maxMessageBytes: 131072 });
      const got = [];
      while (got.length < 3) got.push(...(await source.receiveBatch({ waitTimeSeconds: 1, visibilityTimeoutSeconds: 30 })));
      assert.deepEqual(got.map((m) => m.body).sort(), [...bodies].sort());
      for (const m of got) {
        assert.ok(m.sentAt instanceof Date && m.receivedAt instanceof Date && m.receiveCount === 1, JSON.stringify({ ...m, body: undefined }));
      }
      assert.deepEqual(await source.counts(), { visible: 0, inFlight: 3, delayed: 0 });
      assert.deepEqual(await source.deleteBatch(got), { retry: [], stale: 0 });
      assert.deepEqual(await source.counts(), { visible: 0, inFlight: 0, delayed: 0 });
    } finally {
      await source.close();
    }
  });

  test("visibility changes cross too: a message given back (0 s) is received again", async () => {
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, ['{"n":1}']);
    const source = thread(queueUrl);
    try {
      const [m] = await source.receiveBatch({ waitTimeSeconds: 1, visibilityTimeoutSeconds: 60 });
      assert.ok(m);
      assert.deepEqual(await source.extendVisibility([m], 0), { failed: 0 });
      const again = await fx.sqs.client.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 1 }));
      assert.equal(again.Messages?.[0]?.MessageId, m.messageId);
    } finally {
      await source.close();
    }
  });

  test("errors are classified on the thread and cross as masq's classes: no such queue names QUEUE_URL", async () => {
    const missing = `${fx.sqs.endpoint}/000000000000/no-such-queue`;
    const source = thread(missing);
    try {
      const err = await source.counts().then(
        () => assert.fail("counts of a missing queue succeeded"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.setting, "QUEUE_URL");
      assert.match(err.message, /no such queue/);
      // The protocol probe, made on the thread at start-up, classifies the same way.
      const probe = await source.detectProtocol({ region: "us-east-1", endpoint: fx.sqs.endpoint, setting: "auto" }).then(
        () => assert.fail("the probe of a missing queue succeeded"),
        (e: unknown) => e,
      );
      assert.ok(probe instanceof ConfigError && probe.setting === "QUEUE_URL", String(probe));
    } finally {
      await source.close();
    }
  });

  test("a long poll is cut short when its signal aborts (shutdown), and a call under a fired signal starts aborted", async () => {
    const queueUrl = fx.sqs.newQueue();
    const source = thread(queueUrl);
    try {
      await source.counts();
      const abort = new AbortController();
      const poll = source.receiveBatch({ waitTimeSeconds: 20, visibilityTimeoutSeconds: 30, signal: abort.signal });
      setTimeout(() => abort.abort(), 200);
      // Left to run, the poll would end after 20 s with no messages: resolving, not rejecting.
      await assert.rejects(poll, TransientError);
      await assert.rejects(source.receiveBatch({ waitTimeSeconds: 20, visibilityTimeoutSeconds: 30, signal: abort.signal }), TransientError);
    } finally {
      await source.close();
    }
  });

  test("an SQS thread that dies stops masq: one error line, exit 1, nothing uncommitted deleted", async () => {
    await fx.reset();
    const events = uniqueEvents(1000, 91);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));
    // The thread exits as its third delete call arrives: that batch and those after it are committed, or not, but never deleted.
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { ...TUNING, MASQ_TEST_SQS_THREAD_EXIT_AFTER: "3" } });
    const crashed = spawnMasq(["run", "--drain"], env);
    const { code } = await crashed.exited;
    assert.equal(code, 1, crashed.lines.slice(-10).join("\n"));
    const errors = crashed.lines.filter((l) => l.startsWith("masq: "));
    assert.equal(errors.length, 1, crashed.lines.slice(-10).join("\n"));
    assert.match(errors[0]!, /^masq: the SQS thread stopped \(exited with code 1\): nothing uncommitted was deleted/);
    const committed = (await tableCounts(fx.db)).ledger;
    assert.ok(committed < events.length, `stopped early (${committed} committed)`);

    // Whatever it had not deleted is still in the queue: a drain without the hook writes each message once.
    const again = spawnMasq(["run", "--drain"], { ...env, MASQ_TEST_SQS_THREAD_EXIT_AFTER: undefined });
    assert.equal((await again.exited).code, 0, again.lines.slice(-10).join("\n"));
    const want = expectedCounts(events);
    const c = await tableCounts(fx.db);
    assert.equal(c.rows, want.valid, "every valid message written");
    assert.equal(c.distinctUsers, want.valid, "no valid message written twice");
    assert.deepEqual(c.quarantine, want.byReason);
    assert.equal(c.ledger, events.length);
  });
});
