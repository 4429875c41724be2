import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import pg from "pg";
import { sendBodies } from "../../src/ops/demo.ts";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { canonicalizeIp } from "../../src/ingest/login-event.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { runMasq } from "../helpers/run-masq.ts";
import { makeRunner, TEST_KEY, TEST_MASTER_KEY_HEX, uniqueEvents } from "../helpers/pipeline.ts";

/** bin/masq to its end with exactly this environment (plus PATH and HOME). */
const masq = runMasq;

interface Event {
  user_id: string;
  ip: string;
  device_id: string;
}

/** Audited recovery: every value written through the pipeline comes back exactly, and only for those allowed to see it. */
describe("masq unmask and masq pseudonym", () => {
  const fx = usePipelineFixture();
  let env: Record<string, string>;
  let events: Event[];

  const ingest = async () => {
    await fx.reset();
    const generated = uniqueEvents(400, 61, 0);
    events = generated.map((e) => JSON.parse(e.body) as Event);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, generated.map((e) => e.body));
    const r = await (await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl })).run({ drain: true });
    assert.equal(r.stats.written, 400);
    env = { DATABASE_URL: fx.pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_PSEUDONYM_KEY: Buffer.from(TEST_KEY).toString("hex"), MASQ_LOG_LEVEL: "silent" };
  };

  const audits = async () =>
    (await fx.db.pool.query<{ command: string; reason: string; login_role: string; pseudonyms: string[]; value_count: number; selector: Record<string, unknown> }>(
      "SELECT command, reason, login_role, pseudonyms, value_count, selector FROM masq.unmask_audit ORDER BY id",
    )).rows;

  test("round trip: every ip and device id written is recovered exactly, by user id, and each unmask is audited", async () => {
    await ingest();
    const before = (await audits()).length;
    const r = await masq(["unmask", "--reason", "round-trip test", "--user-id", ...events.map((e) => e.user_id), "--format", "json", "--limit", "100000"], env);
    assert.equal(r.code, 0, r.stderr);
    const values = JSON.parse(r.stdout) as { kind: string; pseudonym: string; value: string }[];
    const recovered = new Map(values.map((v) => [`${v.kind}:${v.pseudonym}`, v.value]));
    const rows = await fx.db.pool.query<{ user_id: string; masked_ip: string; masked_device_id: string }>("SELECT user_id, masked_ip, masked_device_id FROM public.user_logins");
    const byUser = new Map(rows.rows.map((x) => [x.user_id, x]));
    for (const e of events) {
      const row = byUser.get(e.user_id)!;
      assert.equal(recovered.get(`ip:${row.masked_ip}`), canonicalizeIp(e.ip));
      assert.equal(recovered.get(`device_id:${row.masked_device_id}`), e.device_id);
    }
    const a = (await audits()).slice(before);
    assert.equal(a.length, 1);
    assert.equal(a[0]!.command, "unmask");
    assert.equal(a[0]!.reason, "round-trip test");
    assert.equal(a[0]!.value_count, values.length);
    assert.deepEqual(new Set(a[0]!.pseudonyms), new Set(values.map((v) => v.pseudonym)));
    assert.equal(a[0]!.login_role, "postgres");
  });

  test("by pseudonym, as a table or CSV; an unknown pseudonym is reported, not fatal", async () => {
    await ingest();
    const row = (await fx.db.pool.query<{ masked_device_id: string }>("SELECT masked_device_id FROM public.user_logins LIMIT 1")).rows[0]!;
    const unknown = "f".repeat(64);
    const table = await masq(["unmask", "--reason", "case 1", "--pseudonym", row.masked_device_id, unknown], env);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`^device_id\\s+${row.masked_device_id}\\s+\\S`, "m"));
    // Reported once (a bare pseudonym is looked up as each kind), and the one found is not reported.
    assert.equal(table.stderr, `masq: not in the vault (1): ${unknown}\n`);
    const csv = await masq(["unmask", "--reason", "case 1", "--pseudonym", row.masked_device_id, "--format", "csv"], env);
    assert.match(csv.stdout, /^kind,pseudonym,value\r\ndevice_id,[0-9a-f]{64},.+\r\n$/);
    // Past --limit: the first values, and a word that there are more (not a list of "missing" ones).
    const users = (await fx.db.pool.query<{ user_id: string }>("SELECT user_id FROM public.user_logins ORDER BY user_id LIMIT 5")).rows.map((u) => u.user_id);
    const limited = await masq(["unmask", "--reason", "case 1", "--user-id", ...users, "--limit", "3", "--format", "json"], env);
    assert.equal(limited.code, 0, limited.stderr);
    assert.equal((JSON.parse(limited.stdout) as unknown[]).length, 3);
    assert.equal(limited.stderr, "masq: more values match; showing the first 3 (raise --limit for more)\n");
  });

  test("without --reason, or without a selector, nothing is read: exit 2 naming the flag", async () => {
    const noReason = await masq(["unmask", "--pseudonym", "a".repeat(64)], env);
    assert.equal(noReason.code, 2);
    assert.match(noReason.stderr, /--reason/);
    const noSelector = await masq(["unmask", "--reason", "why not"], env);
    assert.equal(noSelector.code, 2);
    assert.match(noSelector.stderr, /--pseudonym/);
    assert.equal(noSelector.stdout, "");
  });

  test("masq pseudonym prints the known vector for a value held by an analyst, reading it from stdin too, audited", async () => {
    await ingest();
    const before = (await audits()).length;
    const expected = "bb32f514"; // HMAC-SHA256(TEST_KEY, "ip:2001:db8::1"), SECURITY.md's vector
    const direct = await masq(["pseudonym", "ip", "2001:DB8:0::1", "--reason", "looking up a report"], env);
    assert.equal(direct.code, 0, direct.stderr);
    assert.ok(direct.stdout.startsWith(expected), direct.stdout);
    const viaStdin = await masq(["pseudonym", "ip", "-", "--reason", "looking up a report"], env, "2001:db8::1\n");
    assert.equal(viaStdin.stdout, direct.stdout);
    const a = (await audits()).slice(before);
    assert.deepEqual(a.map((x) => [x.command, x.value_count, x.pseudonyms[0]]), [
      ["pseudonym", 1, direct.stdout.trim()],
      ["pseudonym", 1, direct.stdout.trim()],
    ]);
    const bad = await masq(["pseudonym", "ip", "not-an-ip-203.0.113.999", "--reason", "typo"], env);
    assert.equal(bad.code, 2);
    assert.ok(!bad.stderr.includes("203.0.113.999"), "the value is never echoed");
    const swapped = await masq(["pseudonym", "198.51.100.23", "ip", "--reason", "arguments swapped"], env);
    assert.equal(swapped.code, 2);
    assert.match(swapped.stderr, /\(<kind>\): must be ip or device_id/);
    assert.ok(!swapped.stderr.includes("198.51.100.23"), "nor when it stands where the kind should");
  });

  test("tampered or swapped ciphertext fails loudly, names the pseudonym, and shows nothing", async () => {
    await ingest();
    const two = (await fx.db.pool.query<{ pseudonym: string }>("SELECT pseudonym FROM masq.vault WHERE kind = 'device_id' ORDER BY pseudonym LIMIT 2")).rows.map((r) => r.pseudonym);
    await fx.db.pool.query("UPDATE masq.vault SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1) WHERE kind = 'device_id' AND pseudonym = $1", [two[0]]);
    const tampered = await masq(["unmask", "--reason", "tamper test", "--pseudonym", two[0]!, two[1]!], env);
    assert.equal(tampered.code, 1);
    assert.equal(tampered.stdout, "");
    assert.match(tampered.stderr, new RegExp(`${two[0]} does not decrypt.*nothing was shown`));
    // Moved to another row: the associated data (kind and pseudonym) no longer matches.
    await ingest();
    const pair = (await fx.db.pool.query<{ pseudonym: string }>("SELECT pseudonym FROM masq.vault WHERE kind = 'ip' ORDER BY pseudonym LIMIT 2")).rows.map((r) => r.pseudonym);
    await fx.db.pool.query(
      `UPDATE masq.vault v SET nonce = o.nonce, ciphertext = o.ciphertext FROM masq.vault o
       WHERE v.kind = 'ip' AND o.kind = 'ip' AND v.pseudonym = $1 AND o.pseudonym = $2`,
      [pair[0], pair[1]],
    );
    const swapped = await masq(["unmask", "--reason", "swap test", "--pseudonym", pair[0]!], env);
    assert.equal(swapped.code, 1);
    assert.equal(swapped.stdout, "");
    assert.match(swapped.stderr, /does not decrypt/);
  });

  test("a wrong master key reveals nothing, names the setting, and leaves no audit row claiming a value was revealed", async () => {
    await ingest();
    const before = (await audits()).length;
    const row = (await fx.db.pool.query<{ masked_ip: string }>("SELECT masked_ip FROM public.user_logins LIMIT 1")).rows[0]!;
    const r = await masq(["unmask", "--reason", "wrong key", "--pseudonym", row.masked_ip], { ...env, MASQ_MASTER_KEY: "ab".repeat(32) });
    assert.equal(r.code, 2);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /MASQ_MASTER_KEY/);
    // The keys are unwrapped before the audit row is written: nothing was revealed, so nothing is recorded.
    assert.equal((await audits()).length, before);
    const p = await masq(["pseudonym", "ip", "192.0.2.1", "--reason", "wrong key"], { ...env, MASQ_MASTER_KEY: "ab".repeat(32) });
    assert.equal(p.code, 2, p.stderr);
    assert.equal((await audits()).length, before);
  });

  test("roles: ingestion can write the vault but never read it; unmask works only with masq_unmask", async () => {
    await ingest();
    const suffix = fx.pgdb.url.split("/").pop()!.replace(/[^a-z0-9_]/g, "").slice(-12);
    const roles = { ingest: `t_ingest_${suffix}`, unmask: `t_unmask_${suffix}`, nobody: `t_nobody_${suffix}` };
    // A password, because an embedded Postgres asks for one (the machine's may trust 127.0.0.1 and ignore it).
    const password = randomBytes(18).toString("hex");
    const as = (role: string) => {
      const u = new URL(fx.pgdb.url);
      u.username = role;
      u.password = password;
      return u.toString();
    };
    const dbName = new URL(fx.pgdb.url).pathname.slice(1);
    try {
      for (const r of Object.values(roles)) await fx.db.pool.query(`CREATE ROLE ${r} LOGIN PASSWORD '${password}'`);
      await fx.db.pool.query(`GRANT CONNECT ON DATABASE ${dbName} TO ${roles.ingest}, ${roles.unmask}, ${roles.nobody}`);
      await fx.db.pool.query(`GRANT masq_ingest TO ${roles.ingest}`);
      await fx.db.pool.query(`GRANT INSERT, SELECT ON public.user_logins TO masq_ingest`);
      await fx.db.pool.query(`GRANT masq_unmask TO ${roles.unmask}`);
      await fx.db.pool.query(`GRANT SELECT ON public.user_logins TO masq_unmask`);

      const ingestClient = new pg.Client({ connectionString: as(roles.ingest) });
      await ingestClient.connect();
      try {
        await assert.rejects(ingestClient.query("SELECT ciphertext FROM masq.vault LIMIT 1"), /permission denied/);
        await assert.rejects(ingestClient.query("SELECT wrapped FROM masq.data_keys LIMIT 1"), /permission denied/);
        await assert.rejects(ingestClient.query("SELECT body_ciphertext FROM masq.quarantine LIMIT 1"), /permission denied/);
        // What ingestion needs is there: the vault's size, for status.
        assert.ok((await ingestClient.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.vault")).rows[0]!.n > 0);
      } finally {
        await ingestClient.end();
      }

      // Ingestion as the ingest role: the vault is written (insert-if-absent without reading it).
      const generated = uniqueEvents(50, 62, 0);
      const queueUrl = fx.sqs.newQueue();
      await sendBodies(fx.sqs.client, queueUrl, generated.map((e) => e.body));
      const { createDb } = await import("../../src/db/pool.ts");
      const ingestDb = createDb({ databaseUrl: as(roles.ingest), poolSize: 3 });
      try {
        const run = await (await makeRunner({ db: ingestDb, sqs: fx.sqs.client, queueUrl })).run({ drain: true });
        assert.equal(run.stats.written, 50);
        assert.equal(run.fatal, undefined);
      } finally {
        await ingestDb.close();
      }
      const newest = JSON.parse(generated[0]!.body) as Event;

      const args = ["unmask", "--reason", "role test", "--pseudonym", createPseudonymizer(TEST_KEY).pseudonymize("device_id", newest.device_id)];
      for (const role of [roles.ingest, roles.nobody]) {
        const denied = await masq(args, { ...env, DATABASE_URL: as(role) });
        assert.equal(denied.code, 1, denied.stderr);
        assert.equal(denied.stdout, "");
        assert.match(denied.stderr, /masq_unmask.*nothing was shown/);
        assert.ok(!denied.stderr.includes(newest.device_id));
      }
      const allowed = await masq(args, { ...env, DATABASE_URL: as(roles.unmask) });
      assert.equal(allowed.code, 0, allowed.stderr);
      assert.ok(allowed.stdout.includes(newest.device_id));
      const audit = await fx.db.pool.query<{ login_role: string }>("SELECT login_role FROM masq.unmask_audit WHERE reason = 'role test'");
      assert.deepEqual(audit.rows, [{ login_role: roles.unmask }], "only the allowed attempt left a record: the others were refused before any was written");
    } finally {
      await fx.db.pool.query(`REVOKE ALL ON public.user_logins FROM masq_ingest, masq_unmask`).catch(() => undefined);
      for (const r of Object.values(roles)) {
        await fx.db.pool.query(`REVOKE CONNECT ON DATABASE ${dbName} FROM ${r}`).catch(() => undefined);
        await fx.db.pool.query(`DROP OWNED BY ${r}`).catch(() => undefined);
        await fx.db.pool.query(`DROP ROLE IF EXISTS ${r}`).catch(() => undefined);
      }
    }
  });
});
