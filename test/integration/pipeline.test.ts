import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { sendBodies } from "../../src/ops/demo.ts";
import { SqsSource, type Handle } from "../../src/ingest/sqs-source.ts";
import { captureLogger, expectedCounts, makeRunner, tableCounts, uniqueEvents } from "../helpers/pipeline.ts";

const fx = usePipelineFixture();

describe("pipeline against fauxqs and Postgres", () => {
  test("a drain writes every valid message once and quarantines every malformed one by reason", async () => {
    await fx.reset();
    const events = uniqueEvents(2500);
    const want = expectedCounts(events);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));

    const { logger, lines } = captureLogger("debug");
    const result = await (await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl, logger })).run({ drain: true });

    assert.equal(result.fatal, undefined);
    assert.equal(result.timedOut, false);
    const c = await tableCounts(fx.db);
    assert.equal(c.rows, want.valid);
    assert.equal(c.distinctUsers, want.valid, "no valid message written twice");
    assert.deepEqual(c.quarantine, want.byReason);
    assert.equal(c.ledger, events.length);
    assert.equal(result.stats.received, events.length);
    assert.equal(result.stats.deleted, events.length);
    const counts = await new SqsSource(fx.sqs.client, queueUrl).counts();
    assert.deepEqual(counts, { visible: 0, inFlight: 0, delayed: 0 }, "every message deleted");

    // No raw ip or device id anywhere: not in a log line, not in the table, not in the quarantine.
    const raw = new Set<string>();
    for (const e of events) {
      try {
        const o = JSON.parse(e.body) as { ip?: unknown; device_id?: unknown };
        if (typeof o.ip === "string") raw.add(o.ip);
        if (typeof o.device_id === "string") raw.add(o.device_id);
      } catch {
        // not JSON: its values are covered by the quarantine body check below (the body is not kept)
      }
    }
    assert.ok(raw.size > 100);
    const logText = lines.join("\n");
    assert.ok(lines.length > 0, "the run logged something");
    const quarantine = await fx.db.pool.query<{ body: string | null; detail: string }>("SELECT body, detail FROM masq.quarantine");
    const stored = (await fx.db.pool.query<{ t: string }>("SELECT string_agg(concat_ws('|', user_id, masked_ip, masked_device_id, locale), ',') AS t FROM public.user_logins")).rows[0]!.t;
    const quarantineText = quarantine.rows.map((r) => `${r.body ?? ""} ${r.detail}`).join("\n");
    for (const v of raw) {
      assert.ok(!logText.includes(v), `a log line holds a raw PII value`);
      assert.ok(!quarantineText.includes(v), `the quarantine holds a raw PII value`);
      assert.ok(!stored.includes(v), `user_logins holds a raw PII value`);
    }
    assert.ok(quarantine.rows.some((r) => r.body?.includes("hmac:")), "quarantined JSON bodies keep pseudonyms");
  });

  test("a redelivered message that was already committed makes no second row", async () => {
    await fx.reset();
    const events = uniqueEvents(300, 11, 0);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));

    // First worker commits but "dies" before deleting: its deletes never reach SQS.
    class NoDelete extends SqsSource {
      override deleteBatch(_handles: readonly Handle[]): Promise<{ retry: Handle[]; stale: number }> {
        return Promise.resolve({ retry: [], stale: 0 });
      }
    }
    const first = await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl, config: { visibilityTimeoutSeconds: 2 }, source: new NoDelete(fx.sqs.client, queueUrl) });
    const running = first.run({ drain: false });
    while (first.stats.written < events.length) await new Promise((r) => setTimeout(r, 50));
    first.stop();
    await running;
    assert.equal((await tableCounts(fx.db)).rows, events.length);

    // The messages come back after their visibility timeout; a second worker sees them again.
    const second = await (await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl })).run({ drain: true });
    assert.equal(second.stats.received, events.length, "every message was redelivered");
    assert.equal(second.stats.duplicates, events.length);
    assert.equal(second.stats.written, 0);
    const c = await tableCounts(fx.db);
    assert.equal(c.rows, events.length);
    assert.equal(c.distinctUsers, events.length);
  });

  test("rows the database rejects are isolated and quarantined as db_rejected; the rest commit", async () => {
    await fx.reset();
    // Someone else's constraint on the user's table, which masq's validator knows nothing about.
    await fx.db.pool.query("ALTER TABLE public.user_logins ADD CONSTRAINT no_blackberry CHECK (device_type <> 'blackberry')");
    try {
      const events = uniqueEvents(400, 5, 0).map((e, i) =>
        i % 50 === 7 ? { ...e, body: JSON.stringify({ ...(JSON.parse(e.body) as object), device_type: "blackberry" }) } : e,
      );
      const queueUrl = fx.sqs.newQueue();
      await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));
      const result = await (await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl })).run({ drain: true });
      const c = await tableCounts(fx.db);
      assert.equal(c.quarantine.db_rejected, 8);
      assert.equal(c.rows, 392);
      assert.equal(result.stats.quarantined.db_rejected, 8);
      const detail = await fx.db.pool.query<{ detail: string }>("SELECT detail FROM masq.quarantine WHERE reason = 'db_rejected' LIMIT 1");
      assert.match(detail.rows[0]!.detail, /no_blackberry|check constraint/);
    } finally {
      await fx.db.pool.query("ALTER TABLE public.user_logins DROP CONSTRAINT no_blackberry");
    }
  });

  test("the SQL function turns app_version back into text", async () => {
    const r = await fx.db.pool.query<{ a: string; b: string; c: string }>(
      "SELECT masq.app_version_text(2003000) AS a, masq.app_version_text(96000) AS b, masq.app_version_text(999999999) AS c",
    );
    assert.deepEqual(r.rows[0], { a: "2.3.0", b: "0.96.0", c: "999.999.999" });
  });
});
