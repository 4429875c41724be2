import assert from "node:assert/strict";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { macMatches, readAuditRow } from "../../src/audit/audit-row.ts";
import { openAuditKey } from "../../src/audit/audit-key.ts";
import { subjectFingerprint } from "../../src/audit/subject-fingerprint.ts";
import { sendBodies } from "../../src/demo/send-events.ts";
import { commitMessages } from "../../src/runner/commit-messages.ts";
import { LocalKeyProvider } from "../../src/vault/local-provider.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { createLoginRoles, type LoginRoles } from "../helpers/login-roles.ts";
import { makeRunner, TABLE, TEST_KEY, TEST_MASTER_KEY, TEST_MASTER_KEY_HEX, testKeys } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";

interface Login {
  user_id: string;
  ip: string;
  device_id: string;
  device_type: string;
  app_version: string;
  locale?: string;
}

const HOSTILE = "dev\u001b]0;owned\u0007\u001b[2J=cmd|' /C calc'!A0\u009b31m";

/** Logins of three users; alice's device ids include terminal escapes and a spreadsheet formula. */
function logins(): Login[] {
  const out: Login[] = [];
  for (let i = 0; i < 6; i++) out.push({ user_id: "alice", ip: `198.51.100.${i + 1}`, device_id: i === 2 ? HOSTILE : `alice-dev-${i}`, device_type: "ios", app_version: "1.2.3", locale: "de-DE" });
  for (let i = 0; i < 4; i++) out.push({ user_id: "bob", ip: `203.0.113.${i + 1}`, device_id: `bob-dev-${i}`, device_type: "android", app_version: "2.0" });
  // carol shares one of alice's ip addresses: alice's export shows it, carol's rows do not come with it.
  out.push({ user_id: "carol", ip: "198.51.100.1", device_id: "carol-dev", device_type: "web", app_version: "3" });
  return out;
}

/** `masq subject export` and the audited quarantine originals, as the shipped login roles, on the real pipeline. */
describe("masq subject export", () => {
  const fx = usePipelineFixture();
  let roles: LoginRoles;
  let person: Record<string, string>;
  const sent = logins();

  before(async () => {
    roles = await createLoginRoles(fx.db.pool, fx.pgdb.url);
    const queueUrl = fx.sqs.newQueue();
    const bad = [
      // Refused (an ip that is not one; a missing field): quarantined, their originals kept encrypted.
      JSON.stringify({ user_id: "alice", ip: "300.1.1.1", device_id: "alice-broken", device_type: "ios", app_version: "1.2.3" }),
      JSON.stringify({ user_id: "bob", ip: "203.0.113.99", device_type: "android", app_version: "2.0" }),
    ];
    await sendBodies(fx.sqs.client, queueUrl, [...sent.map((l) => JSON.stringify(l)), ...bad]);
    const r = await (await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl })).run({ drain: true });
    assert.equal(r.stats.written, sent.length);
    person = { DATABASE_URL: roles.url.person, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_PSEUDONYM_KEY: Buffer.from(TEST_KEY).toString("hex"), MASQ_LOG_LEVEL: "silent" };
  });
  after(async () => {
    await roles.drop();
  });

  const audit = async (action: string) =>
    (
      await fx.db.pool.query<{ seq: string; login_role: string; reason: string; subjects: string[]; selector: Record<string, unknown> }>(
        "SELECT seq::text AS seq, login_role, reason, subjects, selector FROM masq.audit WHERE action = $1 ORDER BY seq",
        [action],
      )
    ).rows;

  test("json: exactly alice's rows with their values, her quarantined message with its original, nothing of bob's or carol's; audited", async () => {
    const before = (await audit("subject-export")).length;
    const r = await runMasq(["subject", "export", "--user-id", "alice", "--reason", "access request DSR-1", "--format", "json"], person);
    assert.equal(r.code, 0, r.stderr);
    const lines = JSON.parse(r.stdout) as Record<string, unknown>[];
    const rows = lines.filter((l) => l.source === "row");
    const expected = sent.filter((l) => l.user_id === "alice");
    assert.deepEqual(
      rows.map((l) => [l.user_id, l.ip, l.device_id, l.device_type, l.locale, typeof l.masked_ip, typeof l.masked_device_id]).sort(),
      expected.map((l) => [l.user_id, l.ip, l.device_id, l.device_type, l.locale ?? null, "string", "string"]).sort(),
    );
    const q = lines.filter((l) => l.source === "quarantined");
    assert.equal(q.length, 1);
    assert.equal((JSON.parse(q[0]!.original as string) as { device_id: string }).device_id, "alice-broken");
    assert.equal(q[0]!.reason, "invalid_ip");
    for (const other of ["bob", "carol", "203.0.113.", "carol-dev"]) assert.ok(!r.stdout.includes(other), `nothing of ${other}`);
    assert.match(r.stderr, /^masq: exported 6 row\(s\) and 1 quarantined message\(s\) of this user in 2 page\(s\); audit row \d+ records 6 row\(s\), 12 value\(s\), 1 quarantined\n$/);

    const rowsNow = (await audit("subject-export")).slice(before);
    assert.equal(rowsNow.length, 1);
    const a = rowsNow[0]!;
    assert.equal(a.login_role, roles.names.person);
    assert.equal(a.reason, "access request DSR-1");
    const key = await openAuditKey(fx.db.pool, new LocalKeyProvider(TEST_MASTER_KEY));
    assert.deepEqual(a.subjects, [subjectFingerprint(key, "alice")], "the user is named by its fingerprint");
    assert.deepEqual({ ...a.selector, subject: undefined }, { subject: undefined, table: "public.user_logins", from: null, to: null, rows: 6, values: 12, quarantined: 1 });
    const trail = await fx.db.pool.query<{ t: string }>("SELECT string_agg(t::text, ' ') AS t FROM masq.audit t");
    assert.ok(!trail.rows[0]!.t.includes("alice"), "the trail never holds the user id");
    assert.ok(macMatches(key.key, (await readAuditRow(fx.db.pool, a.seq))!));
    const verify = await runMasq(["audit", "verify"], person);
    assert.equal(verify.code, 0, verify.stderr + verify.stdout);
  });

  test("table and csv: hostile device ids are shown escaped, and a formula is defused; each format is its own audit row", async () => {
    const table = await runMasq(["subject", "export", "--user-id", "alice", "--reason", "access request DSR-1"], person);
    assert.equal(table.code, 0, table.stderr);
    // eslint-disable-next-line no-control-regex
    assert.ok(!/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/.test(table.stdout), "no control character reaches the terminal");
    assert.ok(table.stdout.includes("dev\\u001b]0;owned\\u0007\\u001b[2J=cmd"));
    assert.ok(table.stdout.startsWith("source  create_date  device_type  locale  app_version  masked_ip"));
    assert.equal(table.stdout.split("\n").filter((l) => l.startsWith("row ")).length, 6);
    assert.match(table.stdout, /^quarantined {2}\S+ {2}\S+ {2}invalid_ip {2}original: \{"user_id":"alice","ip":"300\.1\.1\.1"/m);
    const csv = await runMasq(["subject", "export", "--user-id", "alice", "--reason", "access request DSR-1", "--format", "csv"], person);
    assert.equal(csv.code, 0, csv.stderr);
    const records = csv.stdout.split("\r\n").filter(Boolean);
    assert.equal(records[0], "source,user_id,create_date,device_type,locale,app_version,masked_ip,ip,masked_device_id,device_id,message_id,quarantine_reason,received_at,replayed_at,original");
    assert.equal(records.length, 1 + 6 + 1);
    // eslint-disable-next-line no-control-regex
    assert.ok(!/[\u0000-\u001f\u007f-\u009f]/.test(records.join("")));
    const hostile = records.find((l) => l.includes("owned"))!;
    assert.ok(hostile.includes(",dev\\u001b]0;owned\\u0007\\u001b[2J=cmd|' /C calc'!A0\\u009b31m"), hostile);
    assert.match(records.find((l) => l.startsWith("quarantined"))!, /,"'?\{""user_id"":""alice""/);
  });

  test("--from/--to select rows by create_date (and quarantined messages by the day they arrived)", async () => {
    const keys = await testKeys(fx.db);
    const at = (d: string) => new Date(`${d}T12:00:00Z`);
    const old = [
      { messageId: "old-1", body: JSON.stringify({ user_id: "dora", ip: "192.0.2.1", device_id: "d-1", device_type: "ios", app_version: "1" }), sentAt: at("2026-01-05"), receivedAt: at("2026-01-05") },
      { messageId: "old-2", body: JSON.stringify({ user_id: "dora", ip: "192.0.2.2", device_id: "d-2", device_type: "ios", app_version: "1" }), sentAt: at("2026-02-10"), receivedAt: at("2026-02-10") },
      { messageId: "old-3", body: JSON.stringify({ user_id: "dora", ip: "192.0.2.3", device_id: "d-3", device_type: "ios", app_version: "1" }), sentAt: at("2026-03-15"), receivedAt: at("2026-03-15") },
    ];
    await commitMessages(fx.db.pool, TABLE, keys, old);
    keys.close();
    const r = await runMasq(["subject", "export", "--user-id", "dora", "--reason", "access request DSR-2", "--from", "2026-02-01", "--to", "2026-02-28", "--format", "json"], person);
    assert.equal(r.code, 0, r.stderr);
    const lines = JSON.parse(r.stdout) as { create_date: string; ip: string; device_id: string }[];
    assert.deepEqual(lines.map((l) => [l.create_date, l.ip, l.device_id]), [["2026-02-10", "192.0.2.2", "d-2"]]);
    const a = (await audit("subject-export")).at(-1)!;
    assert.equal(a.selector.from, "2026-02-01");
    assert.equal(a.selector.to, "2026-02-28");
    assert.equal(a.selector.rows, 1);
    const backwards = await runMasq(["subject", "export", "--user-id", "dora", "--reason", "access request DSR-2", "--from", "2026-03-01", "--to", "2026-02-01"], person);
    assert.equal(backwards.code, 2);
    assert.match(backwards.stderr, /^masq: .*\(--from\/--to\): --from is after --to/);
  });

  test("streaming: 5,000 rows of one user come in pages of --page-size, each value right", async () => {
    const keys = await testKeys(fx.db);
    const at = new Date("2026-05-01T08:00:00Z");
    const many = Array.from({ length: 5000 }, (_, i) => ({
      messageId: `many-${i}`,
      body: JSON.stringify({ user_id: "erin", ip: `10.${(i >> 8) & 255}.${i & 255}.7`, device_id: `erin-${i}`, device_type: "ios", app_version: "1" }),
      sentAt: at,
      receivedAt: at,
    }));
    for (let i = 0; i < many.length; i += 1000) await commitMessages(fx.db.pool, TABLE, keys, many.slice(i, i + 1000));
    keys.close();
    const r = await runMasq(["subject", "export", "--user-id", "erin", "--reason", "access request DSR-3", "--format", "csv", "--page-size", "700"], person);
    assert.equal(r.code, 0, r.stderr);
    const records = r.stdout.split("\r\n").filter(Boolean).slice(1);
    assert.equal(records.length, 5000);
    const devices = new Set(records.map((l) => l.split(",")[9]));
    assert.equal(devices.size, 5000);
    for (let i = 0; i < 5000; i += 499) assert.ok(devices.has(`erin-${i}`));
    // ceil(5000 / 700) = 8 pages of rows, and no quarantine page.
    assert.match(r.stderr, /exported 5000 row\(s\) and 0 quarantined message\(s\) of this user in 8 page\(s\)/);
  });

  test("masq_ingest alone is refused with one line naming masq_unmask, and nothing is shown or recorded", async () => {
    const before = (await audit("subject-export")).length;
    const r = await runMasq(["subject", "export", "--user-id", "alice", "--reason", "not my job"], { ...person, DATABASE_URL: roles.url.service });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /^masq: permission denied \(.*\): reading the vault needs the masq_unmask role \(GRANT masq_unmask TO <your login>\); nothing was shown\n$/);
    assert.equal((await audit("subject-export")).length, before);
  });

  test("nothing is shown when the audit row cannot be written", async () => {
    // The trail's append-only trigger refuses every insert while this one is in place: step 1 fails, step 2 never runs.
    await fx.db.pool.query(`CREATE FUNCTION masq.test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full' USING ERRCODE = '53100'; END $$`);
    await fx.db.pool.query("CREATE TRIGGER test_refuse BEFORE INSERT ON masq.audit FOR EACH ROW EXECUTE FUNCTION masq.test_refuse()");
    try {
      const r = await runMasq(["subject", "export", "--user-id", "alice", "--reason", "audit is down", "--format", "json"], person);
      assert.notEqual(r.code, 0);
      assert.equal(r.stdout, "");
      assert.match(r.stderr, /nothing was shown\n$/);
      const q = await runMasq(["quarantine", "show", await aliceQuarantined(), "--original", "--reason", "audit is down"], person);
      assert.notEqual(q.code, 0);
      assert.equal(q.stdout, "");
    } finally {
      await fx.db.pool.query("DROP TRIGGER test_refuse ON masq.audit");
      await fx.db.pool.query("DROP FUNCTION masq.test_refuse()");
    }
  });

  const aliceQuarantined = async () => (await fx.db.pool.query<{ message_id: string }>("SELECT message_id FROM masq.quarantine WHERE user_id = 'alice'")).rows[0]!.message_id;

  test("plain SQL as masq_unmask: no rows of another user than the committed row's, none before its commit, none of another login's row", async () => {
    const c = new pg.Client({ connectionString: roles.url.person });
    await c.connect();
    const other = new pg.Client({ connectionString: roles.url.replayer });
    await other.connect();
    try {
      const step1 = async (client: pg.Client, userId: string) => {
        await client.query("BEGIN");
        const seq = (await client.query<{ seq: string }>("SELECT seq::text FROM masq.audit_subject_export('trying', '{}', '{}', $1, 'v1:00000000000000000000000000000000', 'public.user_logins', NULL, NULL, 1)", [userId])).rows[0]!.seq;
        return seq;
      };
      // Before its commit (same transaction): refused.
      const seq = await step1(c, "bob");
      await assert.rejects(c.query("SELECT masq.subject_export_rows($1, 'bob')", [seq]), /not a committed, recent subject-export of this login/);
      await c.query("ROLLBACK");
      // A committed row must be sealed, which takes the audit key: seal it the way masq does, then ask for alice.
      const key = await openAuditKey(fx.db.pool, new LocalKeyProvider(TEST_MASTER_KEY));
      const { auditMac } = await import("../../src/audit/audit-row.ts");
      const sealed = await step1(c, "bob");
      await c.query("SELECT masq.audit_seal($1, $2)", [sealed, auditMac(key.key, (await readAuditRow(c as unknown as pg.PoolClient, sealed))!)]);
      await c.query("COMMIT");
      await c.query("BEGIN");
      await assert.rejects(c.query("SELECT masq.subject_export_rows($1, 'alice')", [sealed]), /does not record an export of this user/);
      await c.query("ROLLBACK");
      await c.query("BEGIN");
      await assert.rejects(c.query("SELECT masq.subject_export_quarantine($1, 'alice')", [sealed]), /does not record an export of this user/);
      await c.query("ROLLBACK");
      // The row's own user is served: bob's rows, and only bob's.
      await c.query("BEGIN");
      const cursor = (await c.query<{ c: string }>("SELECT masq.subject_export_rows($1, 'bob') AS c", [sealed])).rows[0]!.c;
      const got = (await c.query<{ user_id: string; ip_ciphertext: Buffer | null }>(`FETCH ALL FROM "${cursor}"`)).rows;
      await c.query("COMMIT");
      assert.equal(got.length, 4);
      assert.ok(got.every((g) => g.user_id === "bob" && g.ip_ciphertext !== null));
      // Another login cannot use this login's row.
      await other.query("BEGIN");
      await assert.rejects(other.query("SELECT masq.subject_export_rows($1, 'bob')", [sealed]), /not a committed, recent subject-export of this login/);
      await other.query("ROLLBACK");
      // An unmask row is not an export row, and the grants are not readable.
      const unmaskSeq = (await fx.db.pool.query<{ seq: string }>("SELECT seq::text AS seq FROM masq.audit WHERE action = 'subject-export' ORDER BY seq LIMIT 1")).rows[0]!.seq;
      await assert.rejects(c.query("SELECT masq.quarantine_original($1)", [unmaskSeq]), /not a committed, recent quarantine-original/);
      await assert.rejects(c.query("SELECT * FROM masq.subject_export_grants"), /permission denied/);
      // Without SELECT on a table the export cannot read it through the functions either.
      await fx.db.pool.query("CREATE TABLE public.secret_logins (LIKE public.user_logins)");
      await assert.rejects(c.query("SELECT * FROM masq.audit_subject_export('trying', '{}', '{}', 'bob', 'v1:00000000000000000000000000000000', 'public.secret_logins', NULL, NULL, 1)"), /permission denied for table/);
    } finally {
      await c.query("ROLLBACK").catch(() => undefined);
      await c.end();
      await other.end();
    }
  });

  test("quarantine show --original: the body as received, escaped for a terminal, audited; a corrected body replays, audited with its reason", async () => {
    const id = await aliceQuarantined();
    const noReason = await runMasq(["quarantine", "show", id, "--original"], person);
    assert.equal(noReason.code, 2);
    assert.match(noReason.stderr, /\(--reason\): is required/);
    const before = (await audit("quarantine-original")).length;
    const r = await runMasq(["quarantine", "show", id, "--original", "--reason", "ticket OPS-12: why refused"], person);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /original \(as received; control characters shown escaped\):\n\{"user_id":"alice","ip":"300\.1\.1\.1","device_id":"alice-broken"/);
    const rows = (await audit("quarantine-original")).slice(before);
    assert.deepEqual(rows.map((x) => [x.subjects, x.reason, x.login_role]), [[[id], "ticket OPS-12: why refused", roles.names.person]]);
    const json = await runMasq(["quarantine", "show", id, "--original", "--reason", "ticket OPS-12: why refused", "--json"], person);
    assert.equal((JSON.parse(json.stdout) as { original: string }).original, JSON.stringify({ user_id: "alice", ip: "300.1.1.1", device_id: "alice-broken", device_type: "ios", app_version: "1.2.3" }));
    // masq_ingest alone may not decrypt it.
    const ingestOnly = await runMasq(["quarantine", "show", id, "--original", "--reason", "not my job"], { ...person, DATABASE_URL: roles.url.service });
    assert.equal(ingestOnly.code, 1);
    assert.match(ingestOnly.stderr, /needs the masq_unmask role/);

    // The fix: the original with the ip corrected, replayed as ingestion writes, once.
    const dir = mkdtempSync(join(tmpdir(), "masq-fix-"));
    const fixed = join(dir, "fixed.json");
    writeFileSync(fixed, JSON.stringify({ user_id: "alice", ip: "198.51.100.77", device_id: "alice-broken", device_type: "ios", app_version: "1.2.3" }));
    const replayer = { ...person, DATABASE_URL: roles.url.replayer };
    const replays = (await audit("replay")).length;
    const ok = await runMasq(["quarantine", "replay", "--id", id, "--body-file", fixed, "--reason", "ticket OPS-12: fixed the ip"], replayer);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^replayed 1,/);
    const a = (await audit("replay")).slice(replays);
    assert.equal(a.length, 1);
    assert.equal(a[0]!.reason, "ticket OPS-12: fixed the ip");
    assert.deepEqual(a[0]!.subjects, []);
    assert.equal(a[0]!.selector.message, id);
    const again = await runMasq(["quarantine", "replay", "--id", id, "--body-file", fixed, "--reason", "ticket OPS-12: fixed the ip"], replayer);
    assert.match(again.stdout, /^replayed 0,/);
    const exported = await runMasq(["subject", "export", "--user-id", "alice", "--reason", "access request DSR-1", "--format", "json"], person);
    const lines = JSON.parse(exported.stdout) as { source: string; ip?: string; replayed_at?: string | null }[];
    assert.equal(lines.filter((l) => l.source === "row" && l.ip === "198.51.100.77").length, 1, "the corrected row is there once, its value in the vault");
    assert.equal(typeof lines.find((l) => l.source === "quarantined")!.replayed_at, "string");
    const verify = await runMasq(["audit", "verify"], person);
    assert.equal(verify.code, 0, verify.stderr + verify.stdout);
  });
});
