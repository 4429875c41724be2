import assert from "node:assert/strict";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { sendBodies } from "../../src/ops/demo.ts";
import type { Db } from "../../src/db/pool.ts";
import { SqsSource } from "../../src/ingest/sqs-source.ts";
import { spawnMasq } from "./masq-process.ts";
import type { SyntheticEvent } from "../../src/ops/synthetic-events.ts";
import { expectedCounts, tableCounts, uniqueEvents, waitFor } from "./pipeline.ts";

/**
 * A graceful stop strands nothing: `masq run` (the service, 20 s long polls, 8 receivers) is stopped with SIGTERM
 * while it consumes a full queue. Right after it exits, no message may be invisible (each one is deleted or back in
 * the queue), so a drain started at once finds everything without waiting out the visibility timeout, here 10 min:
 * a stranded message would hold the drain past the test's timeout.
 */
export async function stopStrandsNothing(opts: { db: Db; client: SQSClient; queueUrl: string; env: NodeJS.ProcessEnv; seed: number }): Promise<void> {
  const events = uniqueEvents(2000, opts.seed);
  await sendBodies(opts.client, opts.queueUrl, events.map((e) => e.body));
  const env = { ...opts.env, MASQ_RECEIVERS: "8", MASQ_BATCH_SIZE: "100", MASQ_VISIBILITY_TIMEOUT: "600", MASQ_WAIT_TIME_SECONDS: "20" };
  const ledger = async () => (await opts.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.ingest_ledger")).rows[0]!.n;
  const service = spawnMasq(["run"], env);
  await waitFor(async () => (await ledger()) >= 200, 120_000, "the service to commit some batches");
  service.child.kill("SIGTERM");
  const { code } = await service.exited;
  assert.equal(code, 0, service.lines.slice(-10).join("\n"));
  const committed = await ledger();
  assert.ok(committed < events.length, "stopped before the queue was empty");
  const counts = await new SqsSource(opts.client, opts.queueUrl).counts();
  assert.deepEqual(
    { visible: counts.visible, inFlight: counts.inFlight },
    { visible: events.length - committed, inFlight: 0 },
    "after the stop every message not committed is visible again, none waits out a visibility timeout",
  );

  const drain = spawnMasq(["run", "--drain"], { ...env, MASQ_WAIT_TIME_SECONDS: "1" });
  assert.equal((await drain.exited).code, 0, drain.lines.slice(-10).join("\n"));
  const want = expectedCounts(events);
  const c = await tableCounts(opts.db);
  assert.equal(c.rows, want.valid);
  assert.equal(c.distinctUsers, want.valid);
  assert.deepEqual(c.quarantine, want.byReason);
  assert.equal(c.ledger, events.length);
}

/**
 * Back-to-back drains leave nothing behind: drain, send 2,000, drain again, three times, as a scheduled job runs
 * `masq run --drain` (default settings but `env`'s). A receive a drain left open on the server (an aborted long poll
 * keeps waiting there) would be handed up to ten of the next messages, invisible for the visibility timeout (60 s):
 * right after each drain every message sent must be visible, and the next drain must take them all.
 */
export async function backToBackDrains(opts: { db: Db; client: SQSClient; queueUrl: string; env: NodeJS.ProcessEnv; seed: number }): Promise<void> {
  const source = new SqsSource(opts.client, opts.queueUrl);
  const sent: SyntheticEvent[] = [];
  for (let round = 1; round <= 3; round++) {
    const events = uniqueEvents(2000, opts.seed + round);
    await sendBodies(opts.client, opts.queueUrl, events.map((e) => e.body));
    sent.push(...events);
    const counts = await source.counts();
    assert.deepEqual(
      { visible: counts.visible, inFlight: counts.inFlight },
      { visible: events.length, inFlight: 0 },
      `round ${round}: every message sent after the last drain is visible, none taken by a receive the drain left behind`,
    );
    const drain = spawnMasq(["run", "--drain"], opts.env);
    assert.equal((await drain.exited).code, 0, drain.lines.slice(-10).join("\n"));
    const c = await tableCounts(opts.db);
    assert.equal(c.ledger, sent.length, `round ${round}: the drain took every message sent`);
    assert.equal(c.rows, expectedCounts(sent).valid);
  }
}
