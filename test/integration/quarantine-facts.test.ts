import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { commitMessages } from "../../src/ingest/commit-batch.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { TABLE, TEST_KEY, TEST_MASTER_KEY_HEX, testKeys } from "../helpers/pipeline.ts";
import { UNPARSEABLE_BY_JSONB } from "../helpers/red-team.ts";
import { runMasq } from "../helpers/run-masq.ts";

/** A body that is not JSON at all (cut off), naming its user. */
const CUT_OFF = { user: "victim6", ip: "203.0.113.6", deviceId: "666-77-8888", body: '{"user_id":"victim6","app_version":"1.0","ip":"203.0.113.6","device_id":"666-77-8888"' };

/**
 * Issue 17, finding 1: who a quarantine record is about and which pseudonyms it holds are facts ingestion writes
 * (102_ingest.sql), from what its parser parsed: a body jsonb cannot hold (a NUL escape, a lone surrogate) or that is
 * not JSON at all still names its user, is exported with the user and erased with them.
 */
describe("quarantine records are attributed from the parse", () => {
  const fx = usePipelineFixture();
  const env = () => ({ DATABASE_URL: fx.pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_PSEUDONYM_KEY: Buffer.from(TEST_KEY).toString("hex"), MASQ_LOG_LEVEL: "silent" });
  const p = createPseudonymizer(TEST_KEY);
  const bodies = [...UNPARSEABLE_BY_JSONB, CUT_OFF];

  const ingest = async () => {
    await fx.reset();
    const keys = await testKeys(fx.db);
    const at = new Date();
    const r = await commitMessages(fx.db.pool, TABLE, keys, bodies.map((b, i) => ({ messageId: `fact-${i}`, body: b.body, sentAt: at, receivedAt: at })));
    assert.equal(r.quarantined, bodies.length);
  };

  test("each record names its user and holds the pseudonyms of its ip and device id", async () => {
    await ingest();
    const rows = await fx.db.pool.query<{ message_id: string; user_id: string | null; ip: string | null; dev: string | null }>(
      "SELECT message_id, user_id, masked_ip AS ip, masked_device_id AS dev FROM masq.quarantine ORDER BY message_id",
    );
    assert.deepEqual(
      rows.rows.map((r) => [r.message_id, r.user_id, r.ip, r.dev]),
      bodies.map((b, i) => [
        `fact-${i}`,
        b.user,
        // A body that is not JSON has no redacted copy: its values are only in its encrypted original.
        b === CUT_OFF ? null : p.pseudonymize("ip", b.ip),
        b === CUT_OFF ? null : p.pseudonymize("device_id", b.deviceId),
      ]),
    );
  });

  test("subject export finds each record; subject erase removes it and its original is gone", async () => {
    await ingest();
    for (const [i, b] of bodies.entries()) {
      const exported = await runMasq(["subject", "export", "--user-id", b.user, "--reason", "access request DSR-17", "--format", "json"], env());
      assert.equal(exported.code, 0, exported.stderr);
      const lines = JSON.parse(exported.stdout) as { source: string; original?: string }[];
      const q = lines.filter((l) => l.source === "quarantined");
      assert.equal(q.length, 1, `${b.user}: ${exported.stderr}`);
      assert.ok(q[0]!.original!.includes(b.ip) && q[0]!.original!.includes(b.deviceId), "the export shows the original");

      const erased = await runMasq(["subject", "erase", "--user-id", b.user, "--reason", "erasure request DSR-17"], env());
      assert.equal(erased.code, 0, erased.stderr);
      assert.match(erased.stdout, /quarantine records\s+1\n/);
      const shown = await runMasq(["quarantine", "show", `fact-${i}`, "--original", "--reason", "checking the erasure"], env());
      assert.ok(!shown.stdout.includes(b.ip) && !shown.stdout.includes(b.deviceId), `${b.user}'s ip and device id are gone`);
      const again = await runMasq(["subject", "erase", "--user-id", b.user, "--reason", "erasure request DSR-17"], env());
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /Nothing of this user was left to erase/);
    }
    assert.equal(Number((await fx.db.pool.query<{ n: string }>("SELECT count(*) AS n FROM masq.quarantine")).rows[0]!.n), 0);
  });
});
