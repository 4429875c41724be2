import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sendBodies } from "../../src/ops/demo.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { createLoginRoles, type LoginRoles } from "../helpers/login-roles.ts";
import { masqEnv } from "../helpers/masq-process.ts";
import { runMasq } from "../helpers/masq-run.ts";
import { makeRunner } from "../helpers/pipeline.ts";

/** The counts `masq status` and `masq audit list` print, against what the database holds. */
describe("counts a person reads", () => {
  const fx = usePipelineFixture();
  let roles: LoginRoles;
  let env: (databaseUrl: string) => NodeJS.ProcessEnv;
  const truth = { rows: 0, values: 0 };

  before(async () => {
    // Never analysed, as a table is until autovacuum first gets to it: reltuples stays -1.
    await fx.db.pool.query("ALTER TABLE public.user_logins SET (autovacuum_enabled = false)");
    await fx.db.pool.query("ALTER TABLE masq.vault SET (autovacuum_enabled = false)");
    roles = await createLoginRoles(fx.db.pool, fx.pgdb.url);
    const queueUrl = fx.sqs.newQueue();
    // 144 logins of one user from 20 addresses and 14 devices (34 values), and 456 of others.
    const bodies = [
      ...Array.from({ length: 144 }, (_, i) => ({ user_id: "u-144", ip: `192.0.2.${i % 20}`, device_id: `dev-${i % 14}`, device_type: "ios", app_version: "1.0" })),
      ...Array.from({ length: 456 }, (_, i) => ({ user_id: `other-${i}`, ip: `198.51.100.${i % 200}`, device_id: `other-dev-${i}`, device_type: "web", app_version: "2.0" })),
    ].map((b) => JSON.stringify(b));
    await sendBodies(fx.sqs.client, queueUrl, bodies);
    await (await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl })).run({ drain: true });
    const t = await fx.db.pool.query<{ rows: number; values: number }>("SELECT (SELECT count(*)::int FROM public.user_logins) AS rows, (SELECT count(*)::int FROM masq.vault) AS values");
    Object.assign(truth, t.rows[0]);
    assert.deepEqual(truth, { rows: 600, values: 34 + 200 + 456 });
    env = (databaseUrl) => masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl, extra: { MASQ_CONNECT_TIMEOUT_SECONDS: "5" } });
    // The owner's migrate, with the master key, makes the audit key the person's export needs (SECURITY.md, "The audit trail").
    const m = await runMasq(["migrate"], env(fx.pgdb.url));
    assert.equal(m.code, 0, m.stderr);
    // The server's activity counters reach other sessions once the writers' sessions report them (within seconds).
    for (let i = 0; i < 50; i++) {
      const s = await fx.db.pool.query<{ n: string }>("SELECT n_live_tup::text AS n FROM pg_stat_user_tables WHERE relid = 'public.user_logins'::regclass");
      if (Number(s.rows[0]?.n) === truth.rows) break;
      await new Promise((r) => setTimeout(r, 200));
    }
  });
  after(async () => {
    await roles.drop();
  });

  test("status as the service login, tables never analysed: no '≈ 0', the count from the server's activity counters, labelled", async () => {
    const never = await fx.db.pool.query<{ n: number }>("SELECT reltuples::int AS n FROM pg_class WHERE oid = 'public.user_logins'::regclass");
    assert.equal(never.rows[0]!.n, -1, "the table was analysed: the test no longer shows what it is about");
    const r = await runMasq(["status"], env(roles.url.service));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok(!/≈ 0 /.test(r.stdout), r.stdout);
    assert.match(r.stdout, new RegExp(`public.user_logins ≈ ${truth.rows} rows \\(not analysed yet: from the server's insert and delete counts\\)`));
    assert.match(r.stdout, new RegExp(`vault +(≈ )?${truth.values} distinct values`));
  });

  test("status as the service login, no estimate and no activity counts: 'unknown', never a number", async () => {
    await fx.db.pool.query("SELECT pg_stat_reset_single_table_counters('public.user_logins'::regclass)");
    const r = await runMasq(["status"], env(roles.url.service));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /public.user_logins rows: unknown \(never analysed, and this login may not count them; ANALYZE gives an estimate\)\n/);
  });

  test("status as the owner: exact counts", async () => {
    const r = await runMasq(["status", "--json"], env(fx.pgdb.url));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const s = JSON.parse(r.stdout) as { database: { targetRows: { count: number; exact: boolean }; vault: { values: { count: number; exact: boolean } } } };
    assert.deepEqual(s.database.targetRows, { count: truth.rows, exact: true });
    assert.deepEqual(s.database.vault.values, { count: truth.values, exact: true });
  });

  test("audit list counts what an export showed: 144 rows and 34 values, not '1 value(s)'", async () => {
    const e = await runMasq(["subject", "export", "--user-id", "u-144", "--reason", "access request DSR-144", "--format", "json"], env(roles.url.person));
    assert.equal(e.code, 0, e.stderr);
    const list = await runMasq(["audit", "list", "--limit", "1"], env(roles.url.person));
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /subject-export .* 144 row\(s\), 34 value\(s\), 0 quarantined message\(s\) +reason: "access request DSR-144"/);
    const json = JSON.parse((await runMasq(["audit", "list", "--limit", "1", "--json"], env(roles.url.person))).stdout) as { counts: Record<string, number> }[];
    assert.deepEqual(json[0]!.counts, { rows: 144, values: 34, quarantined: 0 });
  });
});
