import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sendBodies } from "../../src/ops/demo.ts";
import type { Db } from "../../src/db/pool.ts";
import { ensureTargetTable } from "../../src/db/tables.ts";
import { SqsSource } from "../../src/ingest/sqs-source.ts";
import { masqEnv, spawnMasq, type MasqProcess } from "../helpers/masq-process.ts";
import { createDb, expectedCounts, tableCounts, uniqueEvents, waitFor } from "../helpers/pipeline.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";
import { startTestSqs, type TestSqs } from "../helpers/sqs.ts";

/**
 * Several replicas (Kubernetes pods, ECS tasks) consume one queue into one database. They compete for messages; a
 * message whose visibility lapses may reach a second replica, and the ingest ledger lets only one of them write it.
 * The database starts empty: the replicas also race to apply the migrations and create the table.
 */
let pgdb: TestDatabase;
let sqs: TestSqs;
let db: Db;

before(async () => {
  [pgdb, sqs] = await Promise.all([createTestDatabase(), startTestSqs()]);
  db = createDb({ databaseUrl: pgdb.url, poolSize: 6 });
});
after(async () => {
  await db.close();
  await sqs.close();
  await pgdb.close();
});

interface StopLine {
  received: number;
  written: number;
  duplicates: number;
  quarantined: Record<string, number>;
}

/** The final `pipeline stopped` log line of a process: its own counts, as the database recorded them. */
function stopLine(p: MasqProcess): StopLine {
  const line = p.lines.find((l) => l.includes('"msg":"pipeline stopped"'));
  assert.ok(line, `no "pipeline stopped" line:\n${p.lines.slice(-10).join("\n")}`);
  return JSON.parse(line) as StopLine;
}

async function ledgerCount(): Promise<number> {
  try {
    return (await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.ingest_ledger")).rows[0]!.n;
  } catch {
    return 0; // the replicas have not applied the migrations yet
  }
}

describe("several replicas on one queue and one database", () => {
  test("replicas starting at once against a fresh database create the target table once, without an error", async () => {
    // Concurrent CREATE TABLE IF NOT EXISTS collides in Postgres's catalog (23505 on pg_type) unless serialised.
    const pools = [1, 2, 3].map(() => createDb({ databaseUrl: pgdb.url, poolSize: 1 }));
    try {
      for (let i = 0; i < 10; i++) {
        const table = { schema: "public", name: `race_${i}` };
        const results = await Promise.all(pools.map((p) => ensureTargetTable(p.pool, table)));
        assert.equal(results.filter((r) => r.created).length, 1, `exactly one replica created ${table.name}`);
      }
    } finally {
      await Promise.all(pools.map((p) => p.close()));
    }
  });

  test("three `masq run` processes end with every valid message exactly once", async () => {
    const events = uniqueEvents(6000, 71);
    const want = expectedCounts(events);
    const queueUrl = sqs.newQueue();
    await sendBodies(sqs.client, queueUrl, events.map((e) => e.body));
    const env = masqEnv({
      queueUrl,
      sqsEndpoint: sqs.endpoint,
      databaseUrl: pgdb.url,
      extra: {
        MASQ_BATCH_SIZE: "100",
        MASQ_BATCH_WAIT_MS: "50",
        MASQ_RECEIVERS: "4",
        MASQ_WAIT_TIME_SECONDS: "1",
        MASQ_VISIBILITY_TIMEOUT: "10",
        MASQ_SHUTDOWN_TIMEOUT_MS: "20000",
        // Each replica takes a free port for its HTTP listener instead of all three fighting over the default port.
        MASQ_HTTP_PORT: "0",
      },
    });

    const replicas = [1, 2, 3].map(() => spawnMasq(["run"], env));
    try {
      await waitFor(async () => (await ledgerCount()) === events.length, 180_000, "the ledger to hold every message id");
    } finally {
      for (const r of replicas) r.child.kill("SIGTERM");
    }
    const exits = await Promise.all(replicas.map((r) => r.exited));
    exits.forEach(({ code }, i) => assert.equal(code, 0, `replica ${i + 1} exit code:\n${replicas[i]!.lines.slice(-10).join("\n")}`));

    const c = await tableCounts(db);
    assert.equal(c.rows, want.valid, "every valid message written");
    assert.equal(c.distinctUsers, want.valid, "no valid message written twice");
    assert.deepEqual(c.quarantine, want.byReason);
    assert.equal(c.ledger, events.length);

    // Each replica reports what the database recorded for it, so their sums are the table's counts exactly.
    const stops = replicas.map(stopLine);
    const working = stops.filter((s) => s.received > 0);
    assert.ok(working.length > 1, `more than one replica received messages: ${stops.map((s) => s.received).join(", ")}`);
    assert.equal(
      stops.reduce((n, s) => n + s.written, 0),
      want.valid,
    );
    const quarantined: Record<string, number> = {};
    for (const s of stops) for (const [reason, n] of Object.entries(s.quarantined)) quarantined[reason] = (quarantined[reason] ?? 0) + n;
    assert.deepEqual(quarantined, want.byReason);

    // And every message is gone from the queue: each committed message was deleted by the replica that held it.
    const left = await new SqsSource(sqs.client, queueUrl).counts();
    assert.equal(left.visible + left.inFlight, 0);
  });
});
