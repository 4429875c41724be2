import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { CreateQueueCommand } from "@aws-sdk/client-sqs";
import { describe, test } from "node:test";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { sendBodies, freePort } from "../../src/ops/demo.ts";
import { startTcpProxy } from "../helpers/tcp-proxy.ts";
import { startFauxqsProcess } from "../../src/ops/fauxqs.ts";
import { captureLogger, createDb, expectedCounts, makeRunner, tableCounts, testKeys, uniqueEvents, waitFor } from "../helpers/pipeline.ts";

const fx = usePipelineFixture();

describe("faults", () => {
  test("Postgres going away mid-run and coming back loses nothing and writes nothing twice", async () => {
    await fx.reset();
    const events = uniqueEvents(4000, 21);
    const want = expectedCounts(events);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));

    const proxy = await startTcpProxy(fx.pgdb.port, fx.pgdb.host);
    const viaProxy = createDb({ databaseUrl: fx.pgdb.urlVia(proxy.port), poolSize: 4 });
    const { logger, lines } = captureLogger("info");
    // Small batches, so the outage lands in the middle of the run.
    const runner = await makeRunner({ db: viaProxy, sqs: fx.sqs.client, queueUrl, logger, config: { batchSize: 50, maxInFlight: 400, writers: 2 } });
    const running = runner.run({ drain: true });
    let result: Awaited<typeof running>;
    try {
      await waitFor(() => runner.stats.written > 0, 30_000, "first commits");
      proxy.cut();
      // A commit the server answered just before the cut (the reply already on this side of the proxy) is counted a
      // moment after it: take the count once such replies are read (seen: 47 at the cut, 96 a moment later).
      await new Promise((r) => setTimeout(r, 500));
      const writtenAtCut = runner.stats.written;
      await new Promise((r) => setTimeout(r, 2500));
      // While Postgres is away nothing commits, and receiving stops once the in-flight bound is reached.
      assert.equal(runner.stats.written, writtenAtCut);
      assert.ok(runner.inFlight <= 400 + 10 * 4);
    } finally {
      // Whatever failed above, the run ends and its pool and the proxy close, so the file's process can exit
      // (a failed assertion here once left it running, and the whole suite waiting).
      proxy.restore();
      result = await running;
      await viaProxy.close();
      await proxy.close();
    }

    assert.equal(result.fatal, undefined);
    assert.ok(Object.keys(result.stats.retries).some((k) => k.startsWith("pg") || k.startsWith("e")), "commits were retried");
    assert.ok(lines.some((l) => l.includes("commit failed; retrying")));
    const c = await tableCounts(fx.db);
    assert.equal(c.rows, want.valid);
    assert.equal(c.distinctUsers, want.valid);
    assert.deepEqual(c.quarantine, want.byReason);
  });

  test("a real Postgres restart mid-run (embedded server) loses nothing", { skip: !process.env.DATABASE_URL ? false : "needs the embedded Postgres" }, async () => {
    await fx.reset();
    const events = uniqueEvents(3000, 22);
    const want = expectedCounts(events);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));
    const own = createDb({ databaseUrl: fx.pgdb.url, poolSize: 4 });
    const runner = await makeRunner({ db: own, sqs: fx.sqs.client, queueUrl, config: { batchSize: 50, maxInFlight: 400 } });
    const running = runner.run({ drain: true });
    await waitFor(() => runner.stats.written > 0, 30_000, "first commits");
    await fx.pgdb.embedded!.pause();
    await new Promise((r) => setTimeout(r, 1500));
    await fx.pgdb.embedded!.start();
    const result = await running;
    await own.close();
    // The shared pool's connections died with the server; a fresh pool for the checks.
    await fx.db.close();
    fx.db = createDb({ databaseUrl: fx.pgdb.url });
    assert.equal(result.fatal, undefined);
    const c = await tableCounts(fx.db);
    assert.equal(c.rows, want.valid);
    assert.equal(c.distinctUsers, want.valid);
    assert.deepEqual(c.quarantine, want.byReason);
  });

  test("the SQS server going away mid-run and coming back loses nothing", async () => {
    await fx.reset();
    // Enough messages that the drain outlasts the first deletes plus the 2.5 s outage on any machine: with 4,000 a
    // fast drain could receive its last message before the cut, and no receive failed (seen once in CI).
    const events = uniqueEvents(20_000, 23);
    const want = expectedCounts(events);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));

    const proxy = await startTcpProxy(Number(new URL(fx.sqs.endpoint).port));
    const client = fx.sqs.clientFor(`http://127.0.0.1:${proxy.port}`);
    const { logger, lines } = captureLogger("info");
    const runner = await makeRunner({ db: fx.db, sqs: client, queueUrl, logger, config: { batchSize: 50, maxInFlight: 400 } });
    const running = runner.run({ drain: true });
    await waitFor(() => runner.stats.deleted > 0, 30_000, "first deletes");
    proxy.cut();
    await new Promise((r) => setTimeout(r, 2500));
    proxy.restore();
    const result = await running;
    client.destroy();
    await proxy.close();

    assert.equal(result.fatal, undefined);
    assert.ok(lines.some((l) => l.includes("receive failed; retrying")), "receives were retried");
    const c = await tableCounts(fx.db);
    assert.equal(c.rows, want.valid);
    assert.equal(c.distinctUsers, want.valid);
    assert.deepEqual(c.quarantine, want.byReason);
    assert.equal(c.ledger, events.length);
  });

  test("the SQS server crashing (SIGKILL) and restarting mid-run loses nothing", async () => {
    await fx.reset();
    const events = uniqueEvents(3000, 25);
    const want = expectedCounts(events);
    const dataDir = mkdtempSync(path.join(tmpdir(), "masq-fauxqs-"));
    const server = await startFauxqsProcess(await freePort(), dataDir);
    const client = fx.sqs.clientFor(server.endpoint);
    try {
      const created = await client.send(new CreateQueueCommand({ QueueName: "login-queue" }));
      await sendBodies(client, created.QueueUrl!, events.map((e) => e.body));
      const { logger, lines } = captureLogger("info");
      const runner = await makeRunner({ db: fx.db, sqs: client, queueUrl: created.QueueUrl!, logger, config: { batchSize: 50, maxInFlight: 400, visibilityTimeoutSeconds: 5 } });
      const running = runner.run({ drain: true });
      await waitFor(() => runner.stats.deleted > 0, 30_000, "first deletes");
      await server.kill();
      await new Promise((r) => setTimeout(r, 2000));
      await server.start();
      const result = await running;
      assert.equal(result.fatal, undefined);
      assert.ok(lines.some((l) => l.includes("receive failed; retrying")), "receives were retried while the server was down");
      const c = await tableCounts(fx.db);
      assert.equal(c.rows, want.valid);
      assert.equal(c.distinctUsers, want.valid);
      assert.deepEqual(c.quarantine, want.byReason);
      assert.equal(c.ledger, events.length);
    } finally {
      client.destroy();
      await server.kill();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test("held messages have their visibility extended while a commit is stuck, so none is redelivered", async () => {
    await fx.reset();
    const events = uniqueEvents(500, 24, 0);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));
    const proxy = await startTcpProxy(fx.pgdb.port, fx.pgdb.host);
    const viaProxy = createDb({ databaseUrl: fx.pgdb.urlVia(proxy.port), poolSize: 4 });
    // Keys are loaded at start-up, before the outage.
    const keys = await testKeys(fx.db);
    // A 2 s visibility timeout and a 5 s outage: without extension every held message would come back.
    proxy.cut();
    const runner = await makeRunner({ db: viaProxy, sqs: fx.sqs.client, queueUrl, keys, config: { visibilityTimeoutSeconds: 2, batchSize: 100, maxInFlight: 600 } });
    const running = runner.run({ drain: true });
    await waitFor(() => runner.inFlight >= 100, 30_000, "messages to be held");
    await new Promise((r) => setTimeout(r, 5000));
    proxy.restore();
    const result = await running;
    await viaProxy.close();
    await proxy.close();

    assert.ok(result.stats.visibilityExtended > 0, "visibility was extended");
    assert.equal(result.stats.received, events.length, "no message was received twice");
    assert.equal(result.stats.duplicates, 0);
    const c = await tableCounts(fx.db);
    assert.equal(c.rows, events.length);
    assert.equal(c.distinctUsers, events.length);
  });

  test("ledger pruning drops the day partitions older than the retention window and deletes only older ids elsewhere", async () => {
    await fx.reset();
    const day = (n: number) => new Date(Date.now() - n * 86_400_000).toISOString().slice(0, 10);
    // A partition of its own for the day 20 days ago; the day 19 days ago has none (its ids are in the default
    // partition); ids of no known day are in the undated partition, pruned by when they were committed.
    await fx.db.pool.query("SELECT masq.ensure_ledger_partitions($1::date, $1::date)", [day(20)]);
    await fx.db.pool.query(
      `INSERT INTO masq.ingest_ledger (message_id, outcome, sent_day, committed_at)
       SELECT 'old-' || i, 'written', $1::date, now() - interval '20 days' FROM generate_series(1, 25) i
       UNION ALL SELECT 'old-default', 'written', $2::date, now() - interval '19 days'
       UNION ALL SELECT 'old-undated', 'written', '-infinity', now() - interval '20 days'
       UNION ALL SELECT 'new-' || i, 'written', $3::date, now() - interval '1 day' FROM generate_series(1, 3) i
       UNION ALL SELECT 'new-default', 'quarantined', $4::date, now() - interval '14 days'
       UNION ALL SELECT 'new-undated', 'written', '-infinity', now() - interval '1 day'`,
      [day(20), day(19), day(1), day(14)],
    );
    const partitionOf = async (id: string) =>
      (await fx.db.pool.query<{ p: string }>("SELECT tableoid::regclass::text AS p FROM masq.ingest_ledger WHERE message_id = $1", [id])).rows[0]?.p;
    assert.equal(await partitionOf("old-1"), `masq.ingest_ledger_${day(20).replaceAll("-", "")}`);
    assert.equal(await partitionOf("old-default"), "masq.ingest_ledger_default");
    assert.equal(await partitionOf("old-undated"), "masq.ingest_ledger_undated");
    const { pruneLedger } = await import("../../src/db/ledger.ts");
    assert.deepEqual(await pruneLedger(fx.db.pool, 15 * 86_400), { dropped: [`ingest_ledger_${day(20).replaceAll("-", "")}`], deleted: 2 });
    const left = await fx.db.pool.query<{ message_id: string }>("SELECT message_id FROM masq.ingest_ledger ORDER BY 1");
    assert.deepEqual(left.rows.map((r) => r.message_id), ["new-1", "new-2", "new-3", "new-default", "new-undated"]);
    // The next days' partitions exist, and pruning again changes nothing.
    assert.ok(await fx.db.pool.query("SELECT $1::regclass", [`masq.ingest_ledger_${day(-3).replaceAll("-", "")}`]));
    assert.deepEqual(await pruneLedger(fx.db.pool, 15 * 86_400), { dropped: [], deleted: 0 });
  });

  test("a day's partition made after its ids went to the default partition takes them, and a redelivery still meets its claim", async () => {
    await fx.reset();
    const ahead = new Date(Date.now() + 10 * 86_400_000).toISOString().slice(0, 10);
    const claim = () =>
      fx.db.pool.query("INSERT INTO masq.ingest_ledger (message_id, outcome, sent_day) VALUES ('early', 'written', $1) ON CONFLICT (message_id, sent_day) DO NOTHING", [ahead]);
    assert.equal((await claim()).rowCount, 1);
    const where = async () => (await fx.db.pool.query<{ p: string }>("SELECT tableoid::regclass::text AS p FROM masq.ingest_ledger WHERE message_id = 'early'")).rows.map((r) => r.p);
    assert.deepEqual(await where(), ["masq.ingest_ledger_default"]);
    const made = await fx.db.pool.query<{ n: number }>("SELECT masq.ensure_ledger_partitions($1::date, $1::date) AS n", [ahead]);
    assert.equal(made.rows[0]!.n, 1);
    assert.deepEqual(await where(), [`masq.ingest_ledger_${ahead.replaceAll("-", "")}`]);
    assert.equal((await claim()).rowCount, 0, "the redelivery finds its claim in the day's partition");
    await fx.db.pool.query(`DROP TABLE masq.ingest_ledger_${ahead.replaceAll("-", "")}`);
  });
});
