import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import type pg from "pg";
import { sendBodies } from "../../src/ops/demo.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { makeRunner, TEST_KEY, TEST_MASTER_KEY_HEX, uniqueEvents } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";

/** The audit trail is tamper-evident: `masq audit verify` finds any row changed, removed, reordered or cut. */
describe("masq audit list, verify and checkpoint", () => {
  const fx = usePipelineFixture();
  let env: Record<string, string>;
  let pseudonyms: string[];

  before(async () => {
    const generated = uniqueEvents(60, 81, 0);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, generated.map((e) => e.body));
    const r = await (await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl })).run({ drain: true });
    assert.equal(r.stats.written, 60);
    env = { DATABASE_URL: fx.pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_PSEUDONYM_KEY: Buffer.from(TEST_KEY).toString("hex"), MASQ_LOG_LEVEL: "silent" };
    pseudonyms = (await fx.db.pool.query<{ masked_ip: string }>("SELECT masked_ip FROM public.user_logins ORDER BY user_id LIMIT 8")).rows.map((x) => x.masked_ip);
  });

  /** The owner tampering behind masq's back: with triggers off (session_replication_role), as a superuser can. */
  const tamper = async (pool: pg.Pool, sql: string, values: unknown[] = []) => {
    const c = await pool.connect();
    try {
      await c.query("SET session_replication_role = replica");
      await c.query(sql, values);
    } finally {
      await c.query("RESET session_replication_role");
      c.release();
    }
  };
  // A copy kept in the database itself: exact to the microsecond, which a round trip through JavaScript is not.
  const save = () => tamper(fx.db.pool, "DROP TABLE IF EXISTS public.audit_copy; CREATE TABLE public.audit_copy AS SELECT * FROM masq.audit");
  const restore = () => tamper(fx.db.pool, "DELETE FROM masq.audit; INSERT INTO masq.audit SELECT * FROM public.audit_copy");
  const verify = (...args: string[]) => runMasq(["audit", "verify", ...args], env);

  test("before any audited action, verify checks nothing and makes no audit key", async () => {
    const v = await verify();
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout, "audit trail verified: 0 row(s) checked (no audited action yet)\n");
    assert.equal((await fx.db.pool.query("SELECT 1 FROM masq.audit_keys")).rowCount, 0);
    assert.equal((await runMasq(["audit", "checkpoint"], env)).code, 1);
  });

  test("concurrent unmasks chain one after the other, after the audit key's own first row, and verify checks every row", async () => {
    const runs = await Promise.all(pseudonyms.slice(0, 6).map((p, i) => runMasq(["unmask", "--reason", `concurrent ${i}`, "--pseudonym", p], env)));
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    const rows = (await fx.db.pool.query<{ seq: string; prev_mac: Buffer | null; mac: Buffer }>("SELECT seq::text, prev_mac, mac FROM masq.audit ORDER BY seq")).rows;
    // Row 1: the audit key, made (as the owner may) by the first audited action, where the chain begins.
    assert.deepEqual(rows.map((r) => r.seq), ["1", "2", "3", "4", "5", "6", "7"]);
    rows.forEach((r, i) => assert.deepEqual(r.prev_mac, i === 0 ? null : rows[i - 1]!.mac, `row ${r.seq} follows row ${i}`));
    const v = await verify();
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout, "audit trail verified: 7 row(s) checked\n");
  });

  test("list shows who the server saw, and what the client reported apart", async () => {
    const text = await runMasq(["audit", "list", "--limit", "2"], env);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trimEnd().split("\n");
    assert.equal(lines.length, 2);
    assert.match(lines[0]!, /^ +7 {2}\d{4}-\d\d-\d\dT[\d:.]+Z {2}unmask +postgres {2}1 value\(s\) {2}reason: "concurrent \d" {2}client-reported: os_user=/);
    const json = JSON.parse((await runMasq(["audit", "list", "--json"], env)).stdout) as { seq: number; loginRole: string; clientReported: Record<string, string>; sealed: boolean }[];
    assert.equal(json.length, 7);
    assert.ok(json.every((r) => r.loginRole === "postgres" && r.sealed && typeof r.clientReported.os_user === "string"));
  });

  test("a row changed, removed, reordered or inserted behind masq's back is named, with exit 1", async () => {
    await save();
    const cases: [string, () => Promise<void>, RegExp][] = [
      ["changed", () => tamper(fx.db.pool, "UPDATE masq.audit SET reason = 'nothing to see' WHERE seq = 3"), /row 3 was changed/],
      ["a count lowered", () => tamper(fx.db.pool, "UPDATE masq.audit SET value_count = 0, subjects = '{}' WHERE seq = 2"), /row 2 was changed/],
      ["removed", () => tamper(fx.db.pool, "DELETE FROM masq.audit WHERE seq = 4"), /row 4 removed \(the trail jumps to row 5\)/],
      ["removed and renumbered", () => tamper(fx.db.pool, "DELETE FROM masq.audit WHERE seq = 4; UPDATE masq.audit SET seq = 1 - seq WHERE seq > 4; UPDATE masq.audit SET seq = -seq WHERE seq < 0"), /row 4 was changed/],
      ["reordered", () => tamper(fx.db.pool, "UPDATE masq.audit SET seq = -seq WHERE seq IN (2, 3); UPDATE masq.audit SET seq = CASE seq WHEN -2 THEN 3 ELSE 2 END WHERE seq < 0"), /row 2 was changed/],
      ["inserted", () => tamper(fx.db.pool, "INSERT INTO masq.audit SELECT 8, now(), 'unmask', 'alice', 'alice', '{}', 'forged row', '{}', '{}', 0, 1, mac, sha256(mac) FROM masq.audit WHERE seq = 7"), /row 8 was changed/],
      ["inserted without a MAC", () => tamper(fx.db.pool, "INSERT INTO masq.audit (seq, at, action, login_role, effective_role, reason, selector, subjects, value_count) VALUES (8, now(), 'unmask', 'alice', 'alice', 'forged row', '{}', '{}', 0)"), /row 8 has no MAC, but the chain began at row 1/],
    ];
    for (const [what, act, expected] of cases) {
      await act();
      const v = await verify();
      assert.equal(v.code, 1, `${what}: ${v.stdout}${v.stderr}`);
      assert.match(v.stderr, expected, what);
      assert.equal(v.stdout, "");
      await restore();
      assert.equal((await verify()).code, 0, `restored after ${what}`);
    }
    // And masq itself refuses to change or delete a row, even for the owner (until the owner drops its triggers).
    await assert.rejects(fx.db.pool.query("UPDATE masq.audit SET reason = 'nothing to see' WHERE seq = 1"), /append-only/);
    await assert.rejects(fx.db.pool.query("DELETE FROM masq.audit WHERE seq = 6"), /append-only/);
    await assert.rejects(fx.db.pool.query("TRUNCATE masq.audit"), /append-only/);
  });

  test("a checkpoint kept outside proves that nothing was cut from the end", async () => {
    const cp = await runMasq(["audit", "checkpoint"], env);
    assert.equal(cp.code, 0, cp.stderr);
    const checkpoint = cp.stdout.trim();
    assert.match(checkpoint, /^masq-audit:7:[0-9a-f]{64}$/);
    const later = await runMasq(["unmask", "--reason", "after the checkpoint", "--pseudonym", pseudonyms[7]!], env);
    assert.equal(later.code, 0, later.stderr);
    const ok = await verify("--against", checkpoint);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, "audit trail verified: 8 row(s) checked; nothing was cut since checkpoint row 7\n");
    // The last two rows cut: the chain alone cannot tell, the checkpoint can.
    await tamper(fx.db.pool, "DELETE FROM masq.audit WHERE seq >= 7");
    assert.equal((await verify()).code, 0);
    const cut = await verify("--against", checkpoint);
    assert.equal(cut.code, 1);
    assert.match(cut.stderr, /row 7, the checkpoint's head, is gone: rows 7 to 7 were cut from the end/);
    const bad = await verify("--against", "row 6 please");
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--against/);
  });

  test("a long trail verifies in seq order (row 10 after row 9, not after row 1), each row later than the one before", async () => {
    const { LocalKeyProvider } = await import("../../src/keys/key-provider.ts");
    const { openAuditKey } = await import("../../src/keys/audit-key.ts");
    const { appendAudit } = await import("../../src/lifecycle/audit.ts");
    const { inTransaction } = await import("../../src/db/pool.ts");
    const provider = new LocalKeyProvider(Buffer.from(TEST_MASTER_KEY_HEX, "hex"));
    const key = await openAuditKey(fx.db.pool, provider);
    const before = Number((await fx.db.pool.query<{ n: string }>("SELECT count(*) AS n FROM masq.audit")).rows[0]!.n);
    // Rotations' rows, appended as the owner does, by four writers at once.
    await Promise.all(
      [0, 1, 2, 3].map(async (w) => {
        for (let i = 0; i < 5; i++) {
          await inTransaction(fx.db.pool, (c) => appendAudit(c, key, { action: "rotate-master-key", reason: "rotate master-key", selector: { w, i }, client: {} }));
        }
      }),
    );
    key.key.fill(0);
    provider.close();
    const v = await verify();
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout, `audit trail verified: ${before + 20} row(s) checked\n`);
    const unordered = await fx.db.pool.query("SELECT 1 FROM masq.audit a JOIN masq.audit b ON b.seq = a.seq + 1 WHERE b.at < a.at");
    assert.equal(unordered.rowCount, 0);
  });

  test("verify needs the master key: with another one it says so and checks nothing", async () => {
    const v = await runMasq(["audit", "verify"], { ...env, MASQ_MASTER_KEY: "cd".repeat(32) });
    assert.equal(v.code, 2, v.stderr);
    assert.match(v.stderr, /MASQ_MASTER_KEY/);
  });
});
