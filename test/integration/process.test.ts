import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { sendBodies } from "../../src/ops/demo.ts";
import { SqsSource } from "../../src/ingest/sqs-source.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { startTcpProxy } from "../helpers/tcp-proxy.ts";
import { expectedCounts, tableCounts, uniqueEvents, waitFor } from "../helpers/pipeline.ts";
import { backToBackDrains, stopStrandsNothing } from "../helpers/stop-scenario.ts";

const fx = usePipelineFixture();

const TUNING = { MASQ_BATCH_SIZE: "50", MASQ_RECEIVERS: "4", MASQ_VISIBILITY_TIMEOUT: "5", MASQ_WAIT_TIME_SECONDS: "1", MASQ_BATCH_WAIT_MS: "50" };

async function rowCount(): Promise<number> {
  return (await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.ingest_ledger")).rows[0]!.n;
}

async function seed(count: number, seedValue: number) {
  const events = uniqueEvents(count, seedValue);
  const queueUrl = fx.sqs.newQueue();
  await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));
  const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: TUNING });
  return { events, queueUrl, env };
}

async function drainAndCheck(env: NodeJS.ProcessEnv, events: ReturnType<typeof uniqueEvents>) {
  const drain = spawnMasq(["run", "--drain"], env);
  const { code } = await drain.exited;
  assert.equal(code, 0, `drain failed:\n${drain.lines.slice(-20).join("\n")}`);
  const want = expectedCounts(events);
  const c = await tableCounts(fx.db);
  assert.equal(c.rows, want.valid, "every valid message written");
  assert.equal(c.distinctUsers, want.valid, "no valid message written twice");
  assert.deepEqual(c.quarantine, want.byReason);
  assert.equal(c.ledger, events.length);
}

describe("masq as a process", () => {
  test("killed with SIGKILL mid-run and restarted: every valid message exactly once", async () => {
    await fx.reset();
    const { events, env } = await seed(3000, 31);
    const first = spawnMasq(["run"], env);
    await waitFor(async () => (await rowCount()) >= 300, 60_000, "the first worker to commit some batches");
    first.child.kill("SIGKILL");
    const { signal } = await first.exited;
    assert.equal(signal, "SIGKILL");
    assert.ok((await rowCount()) < events.length, "killed before it finished");
    // Messages it held come back after their visibility timeout; the restarted drain waits for them.
    await drainAndCheck(env, events);
  });

  test("SIGTERM stops receiving, commits and deletes what is held, and exits 0", async () => {
    await fx.reset();
    const { events, queueUrl, env } = await seed(3000, 32);
    const proc = spawnMasq(["run"], { ...env, MASQ_SHUTDOWN_TIMEOUT_MS: "20000" });
    await waitFor(async () => (await rowCount()) >= 200, 60_000, "some commits");
    proc.child.kill("SIGTERM");
    const { code } = await proc.exited;
    assert.equal(code, 0, proc.lines.slice(-10).join("\n"));
    assert.ok(proc.lines.some((l) => l.includes('"msg":"pipeline stopped"')));
    // Everything committed was deleted, and nothing else was: what is left in the queue is exactly the rest.
    const committed = await rowCount();
    assert.ok(committed < events.length, "stopped before the queue was empty");
    const counts = await new SqsSource(fx.sqs.client, queueUrl).counts();
    assert.equal(counts.visible + counts.inFlight, events.length - committed);
    await drainAndCheck(env, events);
  });

  test("a graceful stop strands nothing: right after SIGTERM no message waits out a visibility timeout (fauxqs)", async () => {
    await fx.reset();
    const queueUrl = fx.sqs.newQueue();
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { MASQ_BATCH_WAIT_MS: "50" } });
    await stopStrandsNothing({ db: fx.db, client: fx.sqs.client, queueUrl, env, seed: 34 });
  });

  test("back-to-back drains leave nothing behind: messages sent right after a drain are all visible, and the next drain takes them all (fauxqs)", async () => {
    await fx.reset();
    const queueUrl = fx.sqs.newQueue();
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url });
    await backToBackDrains({ db: fx.db, client: fx.sqs.client, queueUrl, env, seed: 40 });
  });

  test("a second signal exits at once, even while a graceful stop cannot finish; nothing is lost", async () => {
    await fx.reset();
    const { events, env } = await seed(2000, 33);
    // Postgres is reached through a proxy we can cut, so the graceful stop has commits it cannot finish.
    const proxy = await startTcpProxy(fx.pgdb.port, fx.pgdb.host);
    const proc = spawnMasq(["run"], { ...env, DATABASE_URL: fx.pgdb.urlVia(proxy.port), MASQ_SHUTDOWN_TIMEOUT_MS: "60000" });
    try {
      await waitFor(async () => (await rowCount()) >= 100, 60_000, "some commits");
      proxy.cut();
      await waitFor(() => proc.lines.some((l) => l.includes("commit failed; retrying")), 30_000, "a failing commit");
      proc.child.kill("SIGTERM");
      await waitFor(() => proc.lines.some((l) => l.includes("shutting down")), 10_000, "the graceful stop to begin");
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(proc.child.exitCode, null, "still finishing its batches");
      proc.child.kill("SIGTERM");
      const { code } = await proc.exited;
      assert.equal(code, 143);
      assert.ok(proc.lines.some((l) => l.includes("exiting at once")));
    } finally {
      proxy.restore();
      await proxy.close();
    }
    await drainAndCheck(env, events);
  });
});
