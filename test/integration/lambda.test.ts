import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { freePort } from "../../src/ops/demo.ts";
import { ConfigError } from "../../src/errors.ts";
import { createSqsHandler, handler, lambdaInstance, type SqsEvent, type SqsHandler, type SqsRecord } from "../../src/ingest/lambda-handler.ts";
import type { Db } from "../../src/db/pool.ts";
import { createDb, expectedCounts, TEST_KEY, TEST_MASTER_KEY_HEX, tableCounts, uniqueEvents } from "../helpers/pipeline.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";
import { startTcpProxy } from "../helpers/tcp-proxy.ts";

let pgdb: TestDatabase;
let db: Db;

// No migration here: the handler's cold start applies the migrations and creates the table, as it would on AWS.
before(async () => {
  pgdb = await createTestDatabase();
  db = createDb({ databaseUrl: pgdb.url });
});
after(async () => {
  await db.close();
  await pgdb.close();
});

const KEY_HEX = Buffer.from(TEST_KEY).toString("hex");
// 2024-03-05T23:59:59.000Z: create_date must be the UTC day SQS accepted the message.
const SENT = String(Date.UTC(2024, 2, 5, 23, 59, 59));

/** A record shaped as Lambda's SQS event source delivers it. */
function record(body: string, messageId: string = randomUUID(), attributes: Record<string, string> = { SentTimestamp: SENT }): SqsRecord {
  return {
    messageId,
    receiptHandle: `AQEB${randomBytes(24).toString("base64")}`,
    body,
    attributes: { ApproximateReceiveCount: "1", ApproximateFirstReceiveTimestamp: String(Date.now()), SenderId: "AIDAEXAMPLE", ...attributes },
    eventSource: "aws:sqs",
    eventSourceARN: "arn:aws:sqs:us-east-1:000000000000:login-queue",
    awsRegion: "us-east-1",
  };
}

function eventOf(records: SqsRecord[]): SqsEvent {
  return { Records: records };
}

/** The environment Lambda would give the function; application_name lets the test find the function's connections. */
function lambdaEnv(appName: string, databaseUrl = pgdb.url): NodeJS.ProcessEnv {
  const u = new URL(databaseUrl);
  u.searchParams.set("application_name", appName);
  return { DATABASE_URL: u.toString(), MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_PSEUDONYM_KEY: KEY_HEX, MASQ_LOG_LEVEL: "silent" };
}

async function backends(appName: string): Promise<number[]> {
  const r = await db.pool.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid", [appName]);
  return r.rows.map((x) => x.pid);
}

async function ledgerHas(ids: readonly string[]): Promise<number> {
  const r = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.ingest_ledger WHERE message_id = ANY($1::text[])", [ids]);
  return r.rows[0]!.n;
}

async function reset(): Promise<void> {
  await db.pool.query("TRUNCATE public.user_logins, masq.ingest_ledger, masq.quarantine, masq.vault");
}

/** Gives the valid events' user ids a prefix, so two generated sets can share a table and still count apart. */
function labelled(events: ReturnType<typeof uniqueEvents>, prefix: string): ReturnType<typeof uniqueEvents> {
  return events.map((e) => (e.expectedReason !== null ? e : { ...e, body: JSON.stringify({ ...(JSON.parse(e.body) as object), user_id: `${prefix}-${(JSON.parse(e.body) as { user_id: string }).user_id}` }) }));
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

describe("Lambda handler (SQS event source)", () => {
  let h: SqsHandler;
  const appName = `masq-lambda-${randomBytes(4).toString("hex")}`;
  before(() => {
    h = createSqsHandler(lambdaEnv(appName));
  });
  after(async () => {
    await h.close();
  });

  test("valid messages become rows, malformed ones are quarantined, and none is reported as failed", async () => {
    const events = uniqueEvents(1000, 51);
    const want = expectedCounts(events);
    const records = events.map((e) => record(e.body));
    // Batches of 100, as an event source mapping with BatchSize 100 would deliver them.
    for (const batch of chunk(records, 100)) {
      const res = await h(eventOf(batch), { awsRequestId: randomUUID() });
      assert.deepEqual(res, { batchItemFailures: [] });
    }
    const c = await tableCounts(db);
    assert.equal(c.rows, want.valid);
    assert.equal(c.distinctUsers, want.valid);
    assert.deepEqual(c.quarantine, want.byReason);
    assert.equal(c.ledger, events.length);
    const dates = await db.pool.query<{ d: string }>("SELECT DISTINCT create_date::text AS d FROM public.user_logins");
    assert.deepEqual(dates.rows, [{ d: "2024-03-05" }], "create_date is the SentTimestamp's UTC day");
  });

  test("the same pseudonyms as masq run: the HMAC test vectors of SECURITY.md", async () => {
    const body = JSON.stringify({ user_id: "lambda-vector", app_version: "2.3.0", device_type: "android", ip: "::ffff:199.172.111.135", locale: "RU", device_id: "593-47-5928" });
    const res = await h(eventOf([record(body)]));
    assert.deepEqual(res.batchItemFailures, []);
    const r = await db.pool.query("SELECT masked_ip, masked_device_id, app_version, locale FROM public.user_logins WHERE user_id = 'lambda-vector'");
    assert.deepEqual(r.rows, [
      {
        masked_ip: "8884675af88fb989dbea9740053cb185c22b14672ef71318017b3b3b8df04b16",
        masked_device_id: "08257e30157faab67c5ff6ea2b011c511bc32af2e709c963f887ca97d49b7f96",
        app_version: 2003000,
        locale: "RU",
      },
    ]);
  });

  test("a redelivered batch (same message ids) writes nothing twice", async () => {
    await reset();
    const events = uniqueEvents(300, 52);
    const want = expectedCounts(events);
    const records = events.map((e) => record(e.body));
    assert.deepEqual(await h(eventOf(records)), { batchItemFailures: [] });
    const first = await tableCounts(db);
    // SQS redelivers with new receipt handles and a higher receive count; the message ids stay.
    const again = records.map((r) => ({ ...r, receiptHandle: `AQEB${randomBytes(24).toString("base64")}`, attributes: { ...r.attributes, ApproximateReceiveCount: "2" } }));
    assert.deepEqual(await h(eventOf(again)), { batchItemFailures: [] });
    // A batch that holds one message twice (a standard queue may do that) is fine as well.
    assert.deepEqual(await h(eventOf([records[0]!, records[0]!, ...records.slice(1, 5)])), { batchItemFailures: [] });
    const second = await tableCounts(db);
    assert.deepEqual(second, first);
    assert.equal(second.rows, want.valid);
    assert.deepEqual(second.quarantine, want.byReason);
  });

  test("the Postgres pool lives across invocations: one connection, the same backend", async () => {
    const before = await backends(appName);
    assert.equal(before.length, 1, "one connection per execution environment");
    for (let i = 0; i < 5; i++) {
      const res = await h(eventOf(uniqueEvents(20, 60 + i).map((e) => record(e.body))));
      assert.deepEqual(res.batchItemFailures, []);
    }
    assert.deepEqual(await backends(appName), before, "the same backend served every invocation");
  });

  test("a record without SentTimestamp falls back to the invocation date", async () => {
    const body = JSON.stringify({ user_id: "no-sent-timestamp", app_version: "1", device_type: "ios", ip: "10.0.0.1", device_id: "d-1" });
    const res = await h(eventOf([record(body, randomUUID(), {})]));
    assert.deepEqual(res.batchItemFailures, []);
    const r = await db.pool.query<{ d: string; today: string }>(
      "SELECT create_date::text AS d, (now() AT TIME ZONE 'UTC')::date::text AS today FROM public.user_logins WHERE user_id = 'no-sent-timestamp'",
    );
    assert.equal(r.rows[0]!.d, r.rows[0]!.today);
  });
});

describe("Lambda handler when Postgres is away", () => {
  test("at a cold start: every message comes back in batchItemFailures, and a later delivery loses nothing", async () => {
    await reset();
    const closedPort = await freePort();
    const down = createSqsHandler(lambdaEnv("masq-lambda-down", pgdb.urlVia(closedPort)));
    const events = uniqueEvents(200, 53);
    const want = expectedCounts(events);
    const records = events.map((e) => record(e.body));
    try {
      const res = await down(eventOf(records));
      assert.deepEqual(
        res.batchItemFailures.map((f) => f.itemIdentifier).sort(),
        records.map((r) => r.messageId).sort(),
      );
    } finally {
      await down.close();
    }
    assert.equal(await ledgerHas(records.map((r) => r.messageId)), 0);

    // SQS redelivers the batch; an environment that reaches Postgres commits all of it.
    const up = createSqsHandler(lambdaEnv("masq-lambda-up"));
    try {
      assert.deepEqual(await up(eventOf(records)), { batchItemFailures: [] });
    } finally {
      await up.close();
    }
    const c = await tableCounts(db);
    assert.equal(c.rows, want.valid);
    assert.equal(c.distinctUsers, want.valid);
    assert.deepEqual(c.quarantine, want.byReason);
  });

  test("while warm: a cut connection fails the whole batch, and the same pool recovers once Postgres is back", async () => {
    await reset();
    const proxy = await startTcpProxy(pgdb.port, pgdb.host);
    const warm = createSqsHandler(lambdaEnv("masq-lambda-warm", pgdb.urlVia(proxy.port)));
    const firstEvents = labelled(uniqueEvents(100, 54), "first");
    const events = labelled(uniqueEvents(300, 55), "second");
    try {
      assert.deepEqual(await warm(eventOf(firstEvents.map((e) => record(e.body)))), { batchItemFailures: [] });

      proxy.cut();
      const records = events.map((e) => record(e.body));
      const ids = records.map((r) => r.messageId);
      const res = await warm(eventOf(records));
      assert.deepEqual(res.batchItemFailures.map((f) => f.itemIdentifier).sort(), [...ids].sort(), "every message of the batch is given back");
      assert.equal(await ledgerHas(ids), 0, "nothing of it committed");

      proxy.restore();
      assert.deepEqual(await warm(eventOf(records)), { batchItemFailures: [] });
      assert.equal(await ledgerHas(ids), records.length);
    } finally {
      await warm.close();
      proxy.restore();
      await proxy.close();
    }
    const c = await tableCounts(db);
    const valid = expectedCounts(firstEvents).valid + expectedCounts(events).valid;
    assert.equal(c.rows, valid);
    assert.equal(c.distinctUsers, valid);
  });

  test("a configuration error fails the invocation itself instead of reporting items", async () => {
    const broken = createSqsHandler({ DATABASE_URL: pgdb.url, MASQ_LOG_LEVEL: "silent" });
    try {
      await assert.rejects(broken(eventOf([record("{}")])), (err: unknown) => err instanceof ConfigError && err.setting === "MASQ_MASTER_KEY");
    } finally {
      await broken.close();
    }
  });

  test("MASQ_MIGRATE is read as everywhere else: an invalid value fails the invocation, naming it", async () => {
    const broken = createSqsHandler({ ...lambdaEnv("masq-lambda-bad-migrate"), MASQ_MIGRATE: "banana" });
    try {
      await assert.rejects(broken(eventOf([record("{}")])), (err: unknown) => err instanceof ConfigError && err.setting === "MASQ_MIGRATE");
    } finally {
      await broken.close();
    }
  });
});

describe("MASQ_MIGRATE=no at a cold start", () => {
  test("applies no migration, as MASQ_MIGRATE=false does", async () => {
    const fresh = await createTestDatabase();
    const h = createSqsHandler({ ...lambdaEnv("masq-lambda-no-migrate", fresh.url), MASQ_MIGRATE: "no" });
    const check = createDb({ databaseUrl: fresh.url });
    try {
      // Without masq's schema the cold start cannot open its keys: the invocation fails, and nothing was migrated.
      await assert.rejects(h(eventOf([record("{}")])));
      const r = await check.pool.query<{ ledger: string | null }>("SELECT to_regclass('masq.ingest_ledger')::text AS ledger");
      assert.equal(r.rows[0]!.ledger, null, "the migrations were applied");
    } finally {
      await h.close();
      await check.close();
      await fresh.close();
    }
  });
});

describe("the exported Lambda entry point", () => {
  test("handler reads process.env at its first invocation", async () => {
    await reset();
    const saved = { ...process.env };
    Object.assign(process.env, lambdaEnv("masq-lambda-entry"));
    try {
      const res = await handler(eventOf([record(JSON.stringify({ user_id: "entry", app_version: "1.0", device_type: "ios", ip: "10.1.2.3", device_id: "x" }))]), {
        awsRequestId: randomUUID(),
      });
      assert.deepEqual(res, { batchItemFailures: [] });
      assert.equal((await tableCounts(db)).rows, 1);
    } finally {
      await lambdaInstance.close();
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });
});
