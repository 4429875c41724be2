import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { sendBodies } from "../../src/ops/demo.ts";
import { createLogger } from "../../src/log.ts";
import { inThreadPreparer } from "../../src/ingest/commit-batch.ts";
import { PrepareThreads } from "../../src/ingest/prepare-threads.ts";
import type { IncomingMessage, SealedBatch } from "../../src/ingest/batch.ts";
import { encodeBatch } from "../../src/ingest/write-batch.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { expectedCounts, makeRunner, tableCounts, testKeys, uniqueEvents } from "../helpers/pipeline.ts";

const fx = usePipelineFixture();

const TUNING = { MASQ_BATCH_SIZE: "50", MASQ_RECEIVERS: "4", MASQ_VISIBILITY_TIMEOUT: "5", MASQ_WAIT_TIME_SECONDS: "1", MASQ_BATCH_WAIT_MS: "50" };

async function seed(count: number, seedValue: number, extra: Record<string, string> = {}) {
  const events = uniqueEvents(count, seedValue);
  const queueUrl = fx.sqs.newQueue();
  await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));
  const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { ...TUNING, ...extra } });
  return { events, env };
}

async function assertExactlyOnce(events: ReturnType<typeof uniqueEvents>) {
  const want = expectedCounts(events);
  const c = await tableCounts(fx.db);
  assert.equal(c.rows, want.valid, "every valid message written");
  assert.equal(c.distinctUsers, want.valid, "no valid message written twice");
  assert.deepEqual(c.quarantine, want.byReason);
  assert.equal(c.ledger, events.length);
}

type Usage = { msg: string; cpuUserMs: number; threads: { name: string; cpuUserUs: number; cpuSystemUs: number }[] };

function usageLine(lines: string[]): Usage {
  const line = lines.find((l) => l.startsWith("{") && (JSON.parse(l) as { msg?: string }).msg === "process usage");
  assert.ok(line, `a "process usage" line:\n${lines.slice(-10).join("\n")}`);
  return JSON.parse(line) as Usage;
}

describe("prepare threads", () => {
  test("a prepare thread that dies stops masq: one error line, exit 1, nothing uncommitted deleted", async () => {
    await fx.reset();
    // The thread exits as it receives its fourth batch; three batches at most get committed.
    const { events, env } = await seed(1000, 81, { MASQ_PREPARE_THREADS: "1", MASQ_TEST_PREPARE_THREAD_EXIT_AFTER: "4" });
    const crashed = spawnMasq(["run", "--drain"], env);
    const { code } = await crashed.exited;
    assert.equal(code, 1, crashed.lines.slice(-10).join("\n"));
    const errors = crashed.lines.filter((l) => l.startsWith("masq: "));
    assert.equal(errors.length, 1, crashed.lines.slice(-10).join("\n"));
    assert.match(errors[0]!, /^masq: a prepare thread stopped \(prepare-1 exited with code 1\) \(MASQ_PREPARE_THREADS\): nothing uncommitted was deleted/);
    const committed = (await tableCounts(fx.db)).ledger;
    assert.ok(committed < events.length, `stopped early (${committed} committed)`);

    // Whatever it had not committed is still in the queue: a drain without the hook writes each message once.
    const again = spawnMasq(["run", "--drain"], { ...env, MASQ_TEST_PREPARE_THREAD_EXIT_AFTER: undefined });
    assert.equal((await again.exited).code, 0, again.lines.slice(-10).join("\n"));
    await assertExactlyOnce(events);
  });

  test('the "process usage" line gives each thread\'s CPU time: main, sqs, prepare-1, prepare-2', async () => {
    await fx.reset();
    const { events, env } = await seed(600, 82, { MASQ_PREPARE_THREADS: "2" });
    const proc = spawnMasq(["run", "--drain"], env);
    assert.equal((await proc.exited).code, 0, proc.lines.slice(-10).join("\n"));
    await assertExactlyOnce(events);
    const u = usageLine(proc.lines);
    assert.equal(typeof u.cpuUserMs, "number", "the existing fields stay");
    assert.deepEqual(
      u.threads.map((t) => t.name),
      ["main", "sqs", "prepare-1", "prepare-2"],
    );
    for (const t of u.threads) assert.ok(Number.isInteger(t.cpuUserUs) && t.cpuUserUs > 0 && Number.isInteger(t.cpuSystemUs) && t.cpuSystemUs >= 0, JSON.stringify(t));
  });

  test("MASQ_PREPARE_THREADS=0 prepares on the main thread, exactly once", async () => {
    await fx.reset();
    const { events, env } = await seed(600, 83, { MASQ_PREPARE_THREADS: "0" });
    const proc = spawnMasq(["run", "--drain"], env);
    assert.equal((await proc.exited).code, 0, proc.lines.slice(-10).join("\n"));
    await assertExactlyOnce(events);
    assert.deepEqual(
      usageLine(proc.lines).threads.map((t) => t.name),
      ["main", "sqs"],
    );
  });

  test("rows the database rejects in a batch a thread encoded are split out from the thread's columns and quarantined as db_rejected", async () => {
    await fx.reset();
    // Someone else's constraint on the user's table, which masq's validator knows nothing about.
    await fx.db.pool.query("ALTER TABLE public.user_logins ADD CONSTRAINT no_blackberry CHECK (device_type <> 'blackberry')");
    const threads = new PrepareThreads({ count: 2, logger: createLogger("silent") });
    try {
      const events = uniqueEvents(400, 85, 0.05).map((e, i) =>
        e.expectedReason === null && i % 50 === 7 ? { ...e, body: JSON.stringify({ ...(JSON.parse(e.body) as object), device_type: "blackberry" }) } : e,
      );
      const queueUrl = fx.sqs.newQueue();
      await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));
      const result = await (await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl, preparer: threads })).run({ drain: true });
      assert.equal(result.fatal, undefined);
      const rejected = events.filter((e, i) => e.expectedReason === null && i % 50 === 7).length;
      assert.ok(rejected > 0);
      const want = expectedCounts(events);
      const c = await tableCounts(fx.db);
      assert.equal(c.rows, want.valid - rejected);
      assert.deepEqual(c.quarantine, { ...want.byReason, db_rejected: rejected });
      assert.equal(c.ledger, events.length);
      assert.equal(result.stats.deleted, events.length, "every message deleted once committed");
    } finally {
      await threads.close();
      await fx.db.pool.query("ALTER TABLE public.user_logins DROP CONSTRAINT no_blackberry");
    }
  });

  test("a prepare thread masks and seals a batch exactly as the main thread does", async () => {
    await fx.reset();
    const keys = await testKeys(fx.db);
    const threads = new PrepareThreads({ count: 1, logger: createLogger("silent") });
    try {
      const at = new Date("2026-03-01T12:00:00Z");
      const messages: IncomingMessage[] = uniqueEvents(200, 84, 0.2).map((e, i) => ({ messageId: `m-${i}`, body: e.body, sentAt: i % 7 === 0 ? null : at, receivedAt: at }));
      const here = await inThreadPreparer.prepare(messages, keys);
      const there = await threads.prepare(messages, keys);
      const mine = here.batch as SealedBatch;
      // The thread's batch comes in the statement's wire form; its rows' parameters are the main thread's, literally.
      assert.ok("encoded" in there.batch, "a batch that fits one statement crosses encoded");
      assert.deepEqual(there.batch.encoded.values.slice(0, 8), encodeBatch(mine).values.slice(0, 8));
      // Its columns, asked for as a split would: they match field for field; the vault holds the same values (under fresh nonces).
      const theirs = await there.batch.sealed();
      assert.deepEqual(theirs.rows, mine.rows);
      assert.ok(theirs.rows.messageId.length > 0 && theirs.quarantine.length > 0, "both rows and quarantine records");
      assert.deepEqual(theirs.quarantine.map(withoutCiphertext), mine.quarantine.map(withoutCiphertext));
      assert.deepEqual(theirs.vault.map((v) => `${v.kind}:${v.pseudonym}`).sort(), mine.vault.map((v) => `${v.kind}:${v.pseudonym}`).sort());
      assert.equal(theirs.keyVersion, keys.pseudonym.version);
      for (const v of theirs.vault) assert.ok(Buffer.isBuffer(v.ciphertext) && Buffer.isBuffer(v.nonce));
      // Once the thread knows the batch committed, it seals those values no more.
      there.settle({ min: 0, max: 0 });
      const next = await threads.prepare(messages, keys);
      assert.ok("encoded" in next.batch);
      assert.equal(next.batch.encoded.vaultRows, 0);
      next.settle(null);
    } finally {
      await threads.close();
      keys.close();
    }
  });
});

function withoutCiphertext(o: { kind: string; sealedBody?: unknown }): unknown {
  return o.kind === "quarantine" ? { ...o, sealedBody: o.sealedBody === undefined || o.sealedBody === null ? o.sealedBody : "sealed" } : o;
}
