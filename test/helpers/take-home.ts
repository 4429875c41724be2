import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before } from "node:test";
import { CreateQueueCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { prepareDatabase } from "../../src/db/prepare-database.ts";
import { sendBodies } from "../../src/ops/demo.ts";
import { createLogger } from "../../src/log.ts";
import { createDb, type Db } from "../../src/db/pool.ts";
import { closeAll, throwFirstRejection } from "./fixture.ts";
import { createSqsClient } from "../../src/ingest/sqs-client.ts";
import { SqsSource } from "../../src/ingest/sqs-source.ts";
import { startLocalStack, type LocalStack, type LocalStackVersion } from "./localstack.ts";
import { REPO_ROOT, runDocBlock } from "./doc-blocks.ts";
import { expectedCounts, TABLE, tableCounts, TEST_MASTER_KEY_HEX, uniqueEvents } from "./pipeline.ts";
import { createTestDatabase, type TestDatabase } from "./postgres.ts";
import { TEST_CREDENTIALS } from "./sqs.ts";

export interface LocalStackFixture {
  ls: LocalStack;
  pgdb: TestDatabase;
  db: Db;
  /** A Query-protocol client: the one every LocalStack version speaks, to set up queues and read their counts. */
  sqs: SQSClient;
  createQueue(name: string): Promise<string>;
  reset(): Promise<void>;
}

/** LocalStack of one version and a fresh migrated database, as before/after hooks; nothing starts when `skip` is set. */
export function useLocalStackFixture(version: LocalStackVersion, skip: string | false): LocalStackFixture {
  const f = {
    async createQueue(name: string) {
      return (await f.sqs.send(new CreateQueueCommand({ QueueName: name }))).QueueUrl!;
    },
    async reset() {
      await f.db.pool.query("TRUNCATE public.user_logins, masq.ingest_ledger, masq.quarantine, masq.vault");
    },
  } as LocalStackFixture;
  before(async () => {
    if (skip) return;
    const [ls, pgdb] = await Promise.allSettled([startLocalStack(version), createTestDatabase()]);
    if (ls.status === "fulfilled") f.ls = ls.value;
    if (pgdb.status === "fulfilled") f.pgdb = pgdb.value;
    throwFirstRejection(ls, pgdb);
    f.db = createDb({ databaseUrl: f.pgdb.url });
    await prepareDatabase(f.db, TABLE, { migrate: true, logger: createLogger("silent") });
    f.sqs = createSqsClient({ region: "us-east-1", endpoint: f.ls.endpoint, credentials: TEST_CREDENTIALS, protocol: "query" });
  });
  after(async () => {
    if (skip) return;
    f.sqs?.destroy();
    await closeAll([f.db?.close.bind(f.db), f.pgdb?.close.bind(f.pgdb), f.ls?.stop.bind(f.ls)]);
  });
  return f;
}

/**
 * The README's take-home settings, word for word (no protocol, no endpoint: the queue URL names it), plus the master
 * key the README exports and the test's database. MASQ_HTTP_PORT=0 only because tests run side by side.
 */
export function takeHomeEnv(queueUrl: string, databaseUrl: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
    AWS_REGION: "us-east-1",
    QUEUE_URL: queueUrl,
    DATABASE_URL: databaseUrl,
    MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX,
    MASQ_HTTP_PORT: "0",
  };
}

/**
 * The environment the README's take-home block runs in: a shell's PATH and HOME and nothing of masq's, AWS's or
 * Postgres's, so that a setting the block lacks fails the test as it fails a reader.
 */
export function takeHomeBlockEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME };
}

/** `masq run --drain` as the README writes it, then exact rows, quarantine, ledger, and an empty queue. */
export async function drainTakeHome(fx: LocalStackFixture, opts: { seed: number; expectProtocol: "json" | "query" }): Promise<void> {
  await fx.reset();
  const queueUrl = await fx.createQueue("login-queue");
  assert.equal(queueUrl, fx.ls.queueUrl("login-queue"), "LocalStack names the queue as the take-home stack does");
  const events = uniqueEvents(600, opts.seed);
  await sendBodies(fx.sqs, queueUrl, events.map((e) => e.body));

  // The README's block itself, with this LocalStack's queue URL and this test's database in place of localhost's,
  // in a shell that holds no setting at all: whatever masq needs, the block must give (a master key included). It
  // runs in a directory of its own, so the key file it makes is this run's.
  const env = takeHomeBlockEnv();
  const dir = mkdtempSync(path.join(tmpdir(), "masq-takehome-"));
  // A database of its own: the block's key file makes this database's keys, and the fixture's database stays under
  // the suite's master key for the tests that follow.
  const own = await createTestDatabase();
  const db = createDb({ databaseUrl: own.url });
  try {
    await drainBlock(fx, { ...opts, queueUrl, events, env, dir, own, db });
  } finally {
    await db.close();
    await own.close();
  }
}

async function drainBlock(
  fx: LocalStackFixture,
  { expectProtocol, queueUrl, events, env, dir, own, db }: { expectProtocol: "json" | "query"; queueUrl: string; events: ReturnType<typeof uniqueEvents>; env: NodeJS.ProcessEnv; dir: string; own: TestDatabase; db: Db },
): Promise<void> {
  const result = await runDocBlock("takehome-drain", {
    env,
    cwd: dir,
    values: {
      "http://localhost:4566/000000000000/login-queue": queueUrl,
      "postgres://postgres:postgres@localhost:5432/postgres": own.url,
      "./bin/masq": path.join(REPO_ROOT, "bin/masq"),
    },
    timeoutMs: 240_000,
  });
  const run = { lines: `${result.stdout}\n${result.stderr}`.split("\n").filter(Boolean) };
  assert.equal(result.code, 0, run.lines.slice(-15).join("\n"));
  assert.ok(
    run.lines.some((l) => l.includes(`"msg":"SQS protocol: ${expectProtocol}"`) && l.includes('"setting":"detected"')),
    `logs the detected protocol once:\n${run.lines.filter((l) => l.includes("protocol")).join("\n")}`,
  );
  assert.equal(run.lines.filter((l) => l.includes('"msg":"SQS protocol:')).length, 1);

  const want = expectedCounts(events);
  const c = await tableCounts(db);
  assert.equal(c.rows, want.valid, "every valid message is a row");
  assert.equal(c.distinctUsers, want.valid, "none twice");
  assert.deepEqual(c.quarantine, want.byReason, "every malformed one quarantined under its reason");
  assert.equal(c.ledger, events.length);
  const users = await db.pool.query<{ user_id: string }>("SELECT user_id FROM public.user_logins ORDER BY user_id COLLATE \"C\"");
  const expectedUsers = events.flatMap((e) => (e.expectedReason === null ? [(JSON.parse(e.body) as { user_id: string }).user_id] : [])).sort();
  assert.deepEqual(
    users.rows.map((r) => r.user_id),
    expectedUsers,
  );
  assert.deepEqual(await new SqsSource(fx.sqs, queueUrl).counts(), { visible: 0, inFlight: 0, delayed: 0 }, "the queue is empty");
}
