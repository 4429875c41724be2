import assert from "node:assert/strict";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { auditMac, macMatches, readAuditRow } from "../../src/lifecycle/audit.ts";
import { openAuditKey, subjectFingerprint } from "../../src/keys/audit-key.ts";
import { sendBodies } from "../../src/ops/demo.ts";
import { commitMessages } from "../../src/ingest/commit-batch.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
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
    // The owner's migrate makes the audit key, which the person's audited commands need (and may not make).
    const m = await runMasq(["migrate"], { ...person, DATABASE_URL: fx.pgdb.url });
    assert.equal(m.code, 0, m.stderr);
  });
  after(async () => {
    await roles.drop();
  });

  const audit = async (action: string) =>
    (
      await fx.db.pool.query<{ seq: string; login_role: string; reason: string; subjects: string[]; selector: Record<string, unknown> }>(
        "SELECT a.seq::text AS seq, login_role, reason, subjects, selector FROM masq.audit a WHERE action = $1 ORDER BY a.seq", // by number, not as text
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
    // The document is for the person: the version as they sent it ("1.2.3"), not the table's integer (1002003).
    assert.deepEqual([...new Set(rows.map((l) => l.app_version))], ["1.2.3"]);
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
    assert.ok(table.stdout.split("\n").filter((l) => l.startsWith("row ")).every((l) => / 1\.2\.3 /.test(l) && !l.includes("1002003")), table.stdout);
    assert.match(table.stdout, /^quarantined {2}\S+ {2}\S+ {2}invalid_ip {2}original: \{"user_id":"alice","ip":"300\.1\.1\.1"/m);
    const csv = await runMasq(["subject", "export", "--user-id", "alice", "--reason", "access request DSR-1", "--format", "csv"], person);
    assert.equal(csv.code, 0, csv.stderr);
    const records = csv.stdout.split("\r\n").filter(Boolean);
    assert.equal(records[0], "source,user_id,create_date,device_type,locale,app_version,masked_ip,ip,masked_device_id,device_id,message_id,quarantine_reason,received_at,replayed_at,original");
    assert.equal(records.length, 1 + 6 + 1);
    assert.ok(records.filter((l) => l.startsWith("row,")).every((l) => l.split(",")[5] === "1.2.3"), records.join("\n"));
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
      const { auditMac } = await import("../../src/lifecycle/audit.ts");
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
      // Without SELECT on a table the export cannot read it through the functions either, even one masq writes.
      await fx.db.pool.query("CREATE TABLE public.secret_logins (LIKE public.user_logins)");
      await fx.db.pool.query("INSERT INTO masq.target_tables (relation) VALUES ('public.secret_logins')");
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

  const FINGERPRINT = "v1:00000000000000000000000000000000";

  /** Both steps of an export in plain SQL, as a masq_unmask login can run them: step 1, sealed and committed, then the rows. */
  const exportInSql = async (c: pg.Client, userId: string, table: string) => {
    await c.query("BEGIN");
    try {
      const seq = (await c.query<{ seq: string }>("SELECT seq::text FROM masq.audit_subject_export('trying', '{}', '{}', $1, $2, $3::text::regclass, NULL, NULL, 1)", [userId, FINGERPRINT, table])).rows[0]!.seq;
      const key = await openAuditKey(fx.db.pool, new LocalKeyProvider(TEST_MASTER_KEY));
      await c.query("SELECT masq.audit_seal($1, $2)", [seq, auditMac(key.key, (await readAuditRow(c as unknown as pg.PoolClient, seq))!)]);
      await c.query("COMMIT");
      await c.query("BEGIN");
      const cursor = (await c.query<{ c: string }>("SELECT masq.subject_export_rows($1, $2) AS c", [seq, userId])).rows[0]!.c;
      const rows = (await c.query<{ user_id: string; ip_ciphertext: Buffer | null; device_ciphertext: Buffer | null }>(`FETCH ALL FROM "${cursor}"`)).rows;
      await c.query("COMMIT");
      return { seq, rows };
    } finally {
      await c.query("ROLLBACK").catch(() => undefined);
    }
  };

  const personClient = async (notices: string[] = []) => {
    const c = new pg.Client({ connectionString: roles.url.person });
    c.on("notice", (n) => notices.push(n.message ?? ""));
    await c.connect();
    return c;
  };

  test("as masq_unmask, a temporary view of the login's own is refused: a function in it never runs with the owner's rights", async () => {
    // Only the owner may write this table: a row in it means the login's code ran as the owner.
    await fx.db.pool.query("CREATE TABLE public.export_canary (who text)");
    const notices: string[] = [];
    const c = await personClient(notices);
    try {
      await c.query(`CREATE FUNCTION pg_temp.evil() RETURNS text LANGUAGE plpgsql AS $$
        BEGIN RAISE NOTICE 'evil ran as %', current_user; INSERT INTO public.export_canary VALUES (current_user); RETURN 'nobody'; END $$`);
      await c.query("CREATE TEMP VIEW evil_logins AS SELECT pg_temp.evil() AS user_id, 'x'::text AS masked_ip, 'y'::text AS masked_device_id, current_date AS create_date");
      const recorded = (await audit("subject-export")).length;
      const outcome = await exportInSql(c, "nobody", "pg_temp.evil_logins").then(
        () => "accepted",
        (err: Error) => err.message,
      );
      assert.deepEqual(notices, [], "the login's function never ran");
      assert.match(outcome, /is not a table masq writes/);
      assert.equal((await fx.db.pool.query("SELECT * FROM public.export_canary")).rowCount, 0);
      assert.equal((await audit("subject-export")).length, recorded, "nothing recorded");
    } finally {
      await c.end();
      await fx.db.pool.query("DROP TABLE public.export_canary");
    }
  });

  test("as masq_unmask, a temporary table mapping a made-up user to another user's pseudonyms is refused, and hands out no ciphertext", async () => {
    const bob = (await fx.db.pool.query<{ masked_ip: string; masked_device_id: string }>("SELECT masked_ip, masked_device_id FROM public.user_logins WHERE user_id = 'bob' LIMIT 1")).rows[0]!;
    const c = await personClient();
    try {
      await c.query("CREATE TEMP TABLE mapped (user_id text, device_type text, masked_ip text, masked_device_id text, locale text, app_version integer, create_date date)");
      await c.query("INSERT INTO mapped VALUES ('nobody', 'ios', $1, $2, NULL, 1, current_date)", [bob.masked_ip, bob.masked_device_id]);
      const recorded = (await audit("subject-export")).length;
      await assert.rejects(exportInSql(c, "nobody", "pg_temp.mapped"), /is not a table masq writes/);
      assert.equal((await audit("subject-export")).length, recorded, "nothing recorded, so step 2 has no row to serve");
    } finally {
      await c.end();
    }
  });

  test("only a table masq writes is exported, even one the login may SELECT; the audit row names it schema-qualified", async () => {
    await fx.db.pool.query(`CREATE SCHEMA "Sales"`);
    await fx.db.pool.query(`CREATE TABLE "Sales"."UserLogins" (LIKE public.user_logins)`);
    await fx.db.pool.query(`INSERT INTO "Sales"."UserLogins" SELECT 'zed', device_type, masked_ip, masked_device_id, locale, app_version, create_date FROM public.user_logins WHERE user_id = 'bob'`);
    await fx.db.pool.query(`GRANT USAGE ON SCHEMA "Sales" TO masq_unmask; GRANT SELECT ON "Sales"."UserLogins" TO masq_unmask`);
    const c = await personClient();
    try {
      // A copy of the table (a backup, another team's table): the login may read it, masq does not write it.
      await assert.rejects(exportInSql(c, "zed", `"Sales"."UserLogins"`), /is not a table masq writes/);
      const cli = await runMasq(["subject", "export", "--user-id", "zed", "--reason", "access request DSR-4", "--table", "Sales.UserLogins"], person);
      assert.equal(cli.code, 2);
      assert.equal(cli.stdout, "");
      assert.equal(cli.stderr, `masq: not masq's table (--table): "Sales"."UserLogins" is not a table masq writes; run masq migrate as the table's owner with --table set to it, then export again\n`);
      // Once the owner registers it (`masq migrate` with MASQ_TABLE set to it), it is exported and named in full.
      await fx.db.pool.query(`INSERT INTO masq.target_tables (relation) VALUES ('"Sales"."UserLogins"')`);
      const { seq, rows } = await exportInSql(c, "zed", `"Sales"."UserLogins"`);
      assert.equal(rows.length, 4);
      assert.ok(rows.every((r) => r.user_id === "zed" && r.ip_ciphertext !== null && r.device_ciphertext !== null));
      const row = (await audit("subject-export")).find((a) => a.seq === seq)!;
      assert.equal(row.selector.table, `"Sales"."UserLogins"`);
      // A grant is for a table masq still writes: once it is no longer registered, step 2 refuses.
      await fx.db.pool.query(`DELETE FROM masq.target_tables WHERE relation = '"Sales"."UserLogins"'::regclass`);
      await c.query("BEGIN");
      await assert.rejects(c.query("SELECT masq.subject_export_rows($1, 'zed')", [seq]), /is not a table masq writes/);
      await c.query("ROLLBACK");
    } finally {
      await c.end();
      await fx.db.pool.query(`DROP SCHEMA "Sales" CASCADE`);
    }
  });

  test("a db_rejected record is exported as the masked row the table refused, its ip and device_id from the vault, counted in the audit row", async () => {
    const keys = await testKeys(fx.db);
    const at = new Date("2026-06-01T08:00:00Z");
    const fred = (i: number, deviceType: string) => ({
      messageId: `fred-${i}`,
      body: JSON.stringify({ user_id: "fred", ip: `192.0.2.${50 + i}`, device_id: `fred-dev-${i}`, device_type: deviceType, app_version: "4" }),
      sentAt: at,
      receivedAt: at,
    });
    // Someone else's constraint on the table: fred's second row is refused and kept, masked, as db_rejected.
    await fx.db.pool.query("ALTER TABLE public.user_logins ADD CONSTRAINT export_no_blackberry CHECK (device_type <> 'blackberry')");
    try {
      await commitMessages(fx.db.pool, TABLE, keys, [fred(1, "ios"), fred(2, "blackberry")]);
    } finally {
      await fx.db.pool.query("ALTER TABLE public.user_logins DROP CONSTRAINT export_no_blackberry");
      keys.close();
    }
    const stored = (await fx.db.pool.query<{ reason: string; body_ciphertext: Buffer | null }>("SELECT reason, body_ciphertext FROM masq.quarantine WHERE message_id = 'fred-2'")).rows;
    assert.deepEqual(stored, [{ reason: "db_rejected", body_ciphertext: null }], "no encrypted original: the body is the masked row");

    const r = await runMasq(["subject", "export", "--user-id", "fred", "--reason", "access request DSR-5", "--format", "json"], person);
    assert.equal(r.code, 0, r.stderr);
    const lines = JSON.parse(r.stdout) as Record<string, unknown>[];
    assert.equal(lines.filter((l) => l.source === "row").length, 1);
    const q = lines.filter((l) => l.source === "quarantined");
    assert.equal(q.length, 1);
    const masked = q[0]!.masked_row as Record<string, unknown>;
    assert.deepEqual(
      { ...q[0], masked_row: { ...masked, masked_ip: typeof masked.masked_ip, masked_device_id: typeof masked.masked_device_id } },
      {
        source: "quarantined",
        user_id: "fred",
        message_id: "fred-2",
        reason: "db_rejected",
        received_at: at.toISOString(),
        replayed_at: null,
        original: null,
        masked_row: { create_date: "2026-06-01", device_type: "blackberry", locale: null, app_version: "4.0.0", masked_ip: "string", ip: "192.0.2.52", masked_device_id: "string", device_id: "fred-dev-2" },
      },
    );
    const a = (await audit("subject-export")).find((x) => x.seq === /audit row (\d+)/.exec(r.stderr)?.[1])!;
    assert.deepEqual([a.selector.rows, a.selector.values, a.selector.quarantined], [1, 4, 1], "the refused row's two values are counted with the row's two");

    const table = await runMasq(["subject", "export", "--user-id", "fred", "--reason", "access request DSR-5"], person);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^quarantined {2}2026-06-01T08:00:00\.000Z {2}fred-2 {2}db_rejected {2}no original kept; the row the table refused: 2026-06-01 {2}blackberry {2}- {2}4\.0\.0 {2}[0-9a-f]{64} {2}192\.0\.2\.52 {2}[0-9a-f]{64} {2}fred-dev-2$/m);
    const csv = await runMasq(["subject", "export", "--user-id", "fred", "--reason", "access request DSR-5", "--format", "csv"], person);
    assert.equal(csv.code, 0, csv.stderr);
    const rejected = csv.stdout.split("\r\n").find((l) => l.startsWith("quarantined"))!;
    assert.match(rejected, /^quarantined,fred,2026-06-01,blackberry,,4\.0\.0,[0-9a-f]{64},192\.0\.2\.52,[0-9a-f]{64},fred-dev-2,fred-2,db_rejected,2026-06-01T08:00:00\.000Z,,$/);
  });

  test("each export first deletes the grants older than their ten minutes", async () => {
    const grant = (seq: number, age: string) =>
      fx.db.pool.query("INSERT INTO masq.subject_export_grants (seq, user_digest, target, at) VALUES ($1, masq.subject_digest($1, 'bob'), 'public.user_logins', now() - $2::interval)", [seq, age]);
    await grant(-1, "11 minutes");
    await grant(-2, "9 minutes");
    const r = await runMasq(["subject", "export", "--user-id", "bob", "--reason", "access request DSR-6", "--format", "json"], person);
    assert.equal(r.code, 0, r.stderr);
    const left = (await fx.db.pool.query<{ seq: string }>("SELECT seq::text AS seq FROM masq.subject_export_grants WHERE seq < 0 ORDER BY seq")).rows;
    assert.deepEqual(left.map((g) => g.seq), ["-2"], "the expired grant went, the one still usable stayed");
    const own = /audit row (\d+)/.exec(r.stderr)![1];
    assert.equal((await fx.db.pool.query("SELECT 1 FROM masq.subject_export_grants WHERE seq = $1", [own])).rowCount, 1);
  });
});
