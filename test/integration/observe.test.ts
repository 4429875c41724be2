import assert from "node:assert/strict";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { CORRECTED_REPLAY_REASON } from "../../src/lifecycle/replay-quarantine.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { sendBodies } from "../../src/ops/demo.ts";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { startTcpProxy } from "../helpers/tcp-proxy.ts";
import { captureLogger, expectedCounts, makeRunner, tableCounts, TEST_KEY, testKeys, uniqueEvents, waitFor } from "../helpers/pipeline.ts";
import { prepareOutcome } from "../../src/ingest/prepare.ts";
import { seal, quarantineBodyAad } from "../../src/keys/data-keys.ts";

const fx = usePipelineFixture();

async function ledgerCount(): Promise<number> {
  return (await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.ingest_ledger")).rows[0]!.n;
}

/** The value of one sample in Prometheus text format, e.g. metric('masq_messages_quarantined_total{reason="invalid_ip"}'). */
function metric(text: string, sample: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${sample} `));
  assert.ok(line, `no sample ${sample}`);
  return Number(line.slice(sample.length + 1));
}

function httpPort(lines: string[]): number | undefined {
  for (const l of lines) {
    if (!l.includes("HTTP listener")) continue;
    return (JSON.parse(l) as { port: number }).port;
  }
  return undefined;
}

async function masq(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  const p = spawnMasq(args, env);
  const { code } = await p.exited;
  return { code, out: p.lines.join("\n") };
}

describe("operating masq", () => {
  test("/metrics, /healthz and /readyz are served while masq runs, and readiness follows Postgres", async () => {
    await fx.reset();
    const events = uniqueEvents(1500, 51);
    const want = expectedCounts(events);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));
    const proxy = await startTcpProxy(fx.pgdb.port, fx.pgdb.host);
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.urlVia(proxy.port), extra: { MASQ_WAIT_TIME_SECONDS: "1" } });
    const proc = spawnMasq(["run"], env);
    try {
      await waitFor(() => httpPort(proc.lines) !== undefined, 30_000, "the HTTP listener");
      const base = `http://127.0.0.1:${httpPort(proc.lines)}`;
      assert.equal((await fetch(`${base}/healthz`)).status, 200);
      await waitFor(async () => (await ledgerCount()) === events.length, 60_000, "every message committed");
      await waitFor(async () => metric(await (await fetch(`${base}/metrics`)).text(), "masq_messages_deleted_total") === events.length, 20_000, "deletes");

      const text = await (await fetch(`${base}/metrics`)).text();
      assert.equal(metric(text, "masq_messages_received_total"), events.length);
      assert.equal(metric(text, "masq_rows_written_total"), want.valid);
      for (const [reason, n] of Object.entries(want.byReason)) assert.equal(metric(text, `masq_messages_quarantined_total{reason="${reason}"}`), n);
      assert.equal(metric(text, "masq_duplicates_skipped_total"), 0);
      assert.equal(metric(text, "masq_end_to_end_lag_seconds_count"), events.length);
      assert.ok(metric(text, "masq_batch_size_count") > 0);
      assert.ok(metric(text, "masq_commit_duration_seconds_count") > 0);
      assert.equal(metric(text, "masq_messages_in_flight"), 0);
      assert.ok(metric(text, "masq_last_commit_timestamp_seconds") > Date.now() / 1000 - 120);
      assert.match(text, /masq_queue_messages\{state="visible"\} \d+/);
      assert.match(text, /masq_process_resident_memory_bytes \d+/);
      // The vault's key calls: one data key for this run of many messages, never one per message.
      assert.equal(metric(text, "masq_data_keys_generated_total"), 1);
      assert.equal(metric(text, 'masq_key_provider_calls_total{operation="GenerateDataKey",outcome="ok"}'), 1);

      const ready = await fetch(`${base}/readyz`);
      assert.equal(ready.status, 200);
      assert.deepEqual(((await ready.json()) as { checks: unknown }).checks, { postgres: { ok: true }, migrations: { ok: true }, sqs: { ok: true } });

      proxy.cut();
      await waitFor(async () => (await fetch(`${base}/readyz`)).status === 503, 20_000, "readiness to fail");
      const notReady = (await (await fetch(`${base}/readyz`)).json()) as { checks: { postgres: { ok: boolean }; sqs: { ok: boolean } } };
      assert.equal(notReady.checks.postgres.ok, false);
      assert.equal(notReady.checks.sqs.ok, true);
      assert.equal((await fetch(`${base}/healthz`)).status, 200, "alive, though not ready");
      proxy.restore();
      await waitFor(async () => (await fetch(`${base}/readyz`)).status === 200, 20_000, "readiness to return");
    } finally {
      proc.child.kill("SIGTERM");
      await proc.exited;
      await proxy.close();
    }
  });

  test("an idle service logs progress only when something changed, plus a heartbeat; a busy one logs its counters", async () => {
    await fx.reset();
    const queueUrl = fx.sqs.newQueue();
    const { logger, lines } = captureLogger("info");
    // Ticks of 20 ms and a heartbeat of 1.5 s stand for the service's 10 s and 5 min.
    const runner = await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl, logger, config: { waitTimeSeconds: 1 }, progressLog: { everyMs: 20, heartbeatMs: 1500 } });
    const running = runner.run();
    const progress = () => lines.map((l) => JSON.parse(l) as { msg: string; heartbeat?: boolean; written: number; received: number }).filter((l) => l.msg === "progress");
    try {
      await waitFor(() => progress().length > 0, 30_000, "a first progress line");
      const [idle] = progress();
      assert.equal(idle!.heartbeat, true, `an idle service's first progress line is its heartbeat: ${JSON.stringify(idle)}`);
      assert.equal(idle!.received, 0);
      const events = uniqueEvents(3, 57);
      await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));
      await waitFor(() => progress().some((l) => l.written === expectedCounts(events).valid && l.heartbeat === undefined), 30_000, "a progress line with the rows written");
      await waitFor(() => progress().filter((l) => l.heartbeat === true).length >= 2, 30_000, "the heartbeat once idle again");
      // Hundreds of ticks went by: every line is a heartbeat or says something the line before did not.
      const all = progress().map(({ heartbeat, ...rest }) => ({ heartbeat, text: JSON.stringify({ ...rest, time: 0 }) }));
      for (let i = 1; i < all.length; i++) assert.ok(all[i]!.heartbeat === true || all[i]!.text !== all[i - 1]!.text, `line ${i} repeats line ${i - 1}: ${all[i]!.text}`);
      assert.ok(all.length < 10, `${all.length} progress lines`);
    } finally {
      runner.stop();
      await running;
    }
  });

  test("masq status shows the queue, today's commits and the quarantine by reason", async () => {
    await fx.reset();
    const events = uniqueEvents(600, 52);
    const want = expectedCounts(events);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url });
    assert.equal((await masq(["run", "--drain"], env)).code, 0);
    await sendBodies(fx.sqs.client, queueUrl, ["{}", "{}", "{}"]);

    const json = await masq(["status", "--json"], env);
    assert.equal(json.code, 0, json.out);
    const s = JSON.parse(json.out) as {
      queue: { counts: { visible: number; inFlight: number } };
      database: {
        committedToday: { written: number; quarantined: number };
        targetRows: { count: number };
        quarantine: { reason: string; total: number }[];
        schemaVersion: number;
        latestMigration: number;
        vault: { values: { count: number }; byKind: Record<string, number>; bytes: number; dataKeys: number; masterKeys: string[]; pseudonymKey: { version: number } };
      };
    };
    // A long poll the drain abandoned at exit may still take messages sent right after it (as on AWS): they count as
    // in flight until their visibility timeout, so the three new messages are visible or in flight.
    assert.equal(s.queue.counts.visible + s.queue.counts.inFlight, 3);
    assert.equal(s.database.committedToday.written, want.valid);
    assert.equal(s.database.committedToday.quarantined, events.length - want.valid);
    assert.equal(s.database.targetRows.count, want.valid);
    assert.equal(s.database.schemaVersion, s.database.latestMigration);
    assert.deepEqual(Object.fromEntries(s.database.quarantine.map((q) => [q.reason, q.total])), want.byReason);
    const distinct = await fx.db.pool.query<{ ips: number; devices: number }>(
      "SELECT count(DISTINCT masked_ip)::int AS ips, count(DISTINCT masked_device_id)::int AS devices FROM public.user_logins",
    );
    assert.deepEqual(s.database.vault.byKind, { ip: distinct.rows[0]!.ips, device_id: distinct.rows[0]!.devices });
    assert.equal(s.database.vault.values.count, distinct.rows[0]!.ips + distinct.rows[0]!.devices);
    assert.ok(s.database.vault.bytes > 0);
    const dataKeys = await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.data_keys");
    assert.equal(s.database.vault.dataKeys, dataKeys.rows[0]!.n);
    assert.equal(s.database.vault.masterKeys.length, 1);
    assert.equal(s.database.vault.pseudonymKey.version, 1);

    const text = await masq(["status"], env);
    assert.equal(text.code, 0);
    assert.match(text.out, /visible\s+\d+\n\s+in flight\s+\d+/);
    assert.match(text.out, /up to date/);
    assert.match(text.out, /vault\s+[\d,]+ distinct values \([\d,]+ ips, [\d,]+ device ids\)/);

    const noQueue = await masq(["status"], { ...env, QUEUE_URL: "" });
    assert.match(noQueue.out, /queue\s+not configured/);

    // A database a newer masq migrated: this binary is the one to upgrade (masq migrate would refuse it).
    await fx.db.pool.query("INSERT INTO masq.schema_migrations (version, name) VALUES (999, '999_from_the_future')");
    try {
      const newer = await masq(["status"], env);
      assert.match(newer.out, /migration 999, newer than this masq knows \(\d+\): upgrade masq/);
      assert.doesNotMatch(newer.out, /run masq migrate/);
    } finally {
      await fx.db.pool.query("DELETE FROM masq.schema_migrations WHERE version = 999");
    }
  });

  test("quarantine list and show reveal reasons and redacted bodies, never raw PII", async () => {
    await fx.reset();
    const raw = { user_id: "u-q", app_version: 230, device_type: "android", ip: "203.0.113.77", device_id: "555-12-3456", locale: "DE" };
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, [JSON.stringify(raw), "not json 203.0.113.77"]);
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url });
    assert.equal((await masq(["run", "--drain"], env)).code, 0);

    const list = await masq(["quarantine", "list", "--json"], env);
    const records = JSON.parse(list.out) as { message_id: string; reason: string }[];
    assert.deepEqual(records.map((r) => r.reason).sort(), ["invalid_json", "wrong_type"]);
    const wrongType = records.find((r) => r.reason === "wrong_type")!;
    const byReason = await masq(["quarantine", "list", "--reason-code", "invalid_json"], env);
    assert.match(byReason.out, /invalid_json/);
    assert.doesNotMatch(byReason.out, /wrong_type/);

    const show = await masq(["quarantine", "show", wrongType.message_id], env);
    assert.equal(show.code, 0);
    assert.match(show.out, /app_version must be a string/);
    assert.match(show.out, /hmac:[0-9a-f]{64}/);
    for (const out of [list.out, byReason.out, show.out]) {
      assert.ok(!out.includes("203.0.113.77") && !out.includes("555-12-3456"), "no raw PII in the output");
    }
    assert.equal((await masq(["quarantine", "show", "no-such-id"], env)).code, 1);
  });

  test("quarantine replay loads db_rejected rows once the table accepts them, and a message with a corrected body", async () => {
    await fx.reset();
    await fx.db.pool.query("ALTER TABLE public.user_logins ADD CONSTRAINT no_blackberry CHECK (device_type <> 'blackberry')");
    const good = { user_id: "u-bb", app_version: "1.2.3", device_type: "blackberry", ip: "198.51.100.7", device_id: "111-22-3333", locale: null };
    const bad = { ...good, user_id: "u-fix", device_type: "ios", app_version: 1.5 };
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, [JSON.stringify(good), JSON.stringify(bad)]);
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url });
    try {
      assert.equal((await masq(["run", "--drain"], env)).code, 0);
      assert.deepEqual((await tableCounts(fx.db)).quarantine, { db_rejected: 1, wrong_type: 1 });

      // Still refused while the constraint stands: nothing changes, exit 1.
      const refused = await masq(["quarantine", "replay", "--reason-code", "db_rejected"], env);
      assert.equal(refused.code, 1);
      assert.match(refused.out, /refused by the table 1/);
      await fx.db.pool.query("ALTER TABLE public.user_logins DROP CONSTRAINT no_blackberry");
      const replayed = await masq(["quarantine", "replay", "--reason-code", "db_rejected"], env);
      assert.equal(replayed.code, 0, replayed.out);
      assert.match(replayed.out, /replayed 1\b/);
      assert.match((await masq(["quarantine", "replay", "--reason-code", "db_rejected"], env)).out, /replayed 0\b/, "a second replay is a no-op");

      // A wrong_type record replayed as it is (its kept original) is still rejected; with a corrected body it loads.
      const wt = await fx.db.pool.query<{ message_id: string }>("SELECT message_id FROM masq.quarantine WHERE reason = 'wrong_type'");
      const id = wt.rows[0]!.message_id;
      const asIs = await masq(["quarantine", "replay", "--id", id], env);
      assert.equal(asIs.code, 1);
      assert.match(asIs.out, /replayed 0\b.*still rejected by masq \(left quarantined\): wrong_type 1/);
      const dir = mkdtempSync(path.join(tmpdir(), "masq-replay-"));
      writeFileSync(path.join(dir, "still-bad.json"), JSON.stringify({ ...bad, app_version: "x" }));
      const stillBad = await masq(["quarantine", "replay", "--id", id, "--body-file", path.join(dir, "still-bad.json")], env);
      assert.equal(stillBad.code, 1);
      assert.match(stillBad.out, /invalid_app_version/);
      writeFileSync(path.join(dir, "fixed.json"), JSON.stringify({ ...bad, app_version: "1.5" }));
      const fixed = await masq(["quarantine", "replay", "--id", id, "--body-file", path.join(dir, "fixed.json")], env);
      assert.equal(fixed.code, 0, fixed.out);
      assert.ok(!fixed.out.includes("198.51.100.7"));
      // Audited even without --reason: the record says none was given.
      const audited = await fx.db.pool.query<{ reason: string }>("SELECT reason FROM masq.audit WHERE action = 'replay' ORDER BY seq DESC LIMIT 1");
      assert.equal(audited.rows[0]?.reason, CORRECTED_REPLAY_REASON);

      const rows = await fx.db.pool.query<{ user_id: string; masked_ip: string; app_version: number }>("SELECT user_id, masked_ip, app_version FROM public.user_logins ORDER BY user_id");
      const p = createPseudonymizer(TEST_KEY);
      assert.deepEqual(rows.rows, [
        { user_id: "u-bb", masked_ip: p.pseudonymize("ip", "198.51.100.7"), app_version: 1002003 },
        { user_id: "u-fix", masked_ip: p.pseudonymize("ip", "198.51.100.7"), app_version: 1005000 },
      ]);
      const pending = await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.quarantine WHERE replayed_at IS NULL");
      assert.equal(pending.rows[0]!.n, 0);
      const ledger = await fx.db.pool.query<{ outcome: string }>("SELECT DISTINCT outcome FROM masq.ingest_ledger");
      assert.deepEqual(ledger.rows, [{ outcome: "written" }]);
    } finally {
      await fx.db.pool.query("ALTER TABLE public.user_logins DROP CONSTRAINT IF EXISTS no_blackberry");
    }
  });

  test("quarantine replay --all sends every kept original through the pipeline again: what masq accepts now loads, the rest stays", async () => {
    await fx.reset();
    // Records quarantined by an earlier masq whose validator rejected what this one accepts (simulated: a valid body
    // stored as if rejected), next to one this masq still rejects and one non-JSON body.
    const accepted = { user_id: "u-later-ok", app_version: "3.1.4", device_type: "ios", ip: "2001:DB8::7", device_id: "777-88-9999", locale: "fr" };
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, [JSON.stringify({ ...accepted, app_version: 3 }), "not json 192.0.2.55"]);
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url });
    assert.equal((await masq(["run", "--drain"], env)).code, 0);
    const keys = await testKeys(fx.db);
    const now = new Date();
    const o = prepareOutcome({ messageId: "m-earlier", body: JSON.stringify(accepted), sentAt: now, receivedAt: now }, keys.pseudonym.pseudonymizer);
    assert.equal(o.kind, "row");
    const dk = await keys.dataKeys.reserve(1);
    const sealedBody = seal(dk.key, Buffer.from(JSON.stringify(accepted)), quarantineBodyAad("m-earlier"));
    keys.close();
    await fx.db.pool.query(
      `INSERT INTO masq.ingest_ledger (message_id, outcome) VALUES ('m-earlier', 'quarantined');
       INSERT INTO masq.quarantine (message_id, reason, detail, body, body_length, sent_at, received_at, body_data_key_id, body_nonce, body_ciphertext)
       VALUES ('m-earlier', 'invalid_app_version', 'an older rule', NULL, 1, now(), now(), '${dk.id}', '\\x${sealedBody.nonce.toString("hex")}', '\\x${sealedBody.ciphertext.toString("hex")}')`,
    );

    const dry = await masq(["quarantine", "replay", "--all", "--dry-run"], env);
    assert.match(dry.out, /would replay 1 record\(s\); still rejected: (wrong_type 1, invalid_json 1|invalid_json 1, wrong_type 1)/);
    const r = await masq(["quarantine", "replay", "--all"], env);
    assert.equal(r.code, 1, "two records stay quarantined");
    assert.match(r.out, /replayed 1\b/);
    assert.ok(!r.out.includes("2001:db8::7") && !r.out.includes("777-88-9999") && !r.out.includes("192.0.2.55"));

    const rows = await fx.db.pool.query<{ user_id: string; masked_ip: string; masked_device_id: string }>("SELECT user_id, masked_ip, masked_device_id FROM public.user_logins");
    const p = createPseudonymizer(TEST_KEY);
    assert.deepEqual(rows.rows, [{ user_id: "u-later-ok", masked_ip: p.pseudonymize("ip", "2001:db8::7"), masked_device_id: p.pseudonymize("device_id", "777-88-9999") }]);
    // Its originals are in the vault now, like any ingested row's.
    const vault = await fx.db.pool.query<{ kind: string; pseudonym: string }>("SELECT kind, pseudonym FROM masq.vault ORDER BY kind");
    assert.deepEqual(vault.rows, [
      { kind: "device_id", pseudonym: p.pseudonymize("device_id", "777-88-9999") },
      { kind: "ip", pseudonym: p.pseudonymize("ip", "2001:db8::7") },
    ]);
    const pending = await fx.db.pool.query<{ reason: string }>("SELECT reason FROM masq.quarantine WHERE replayed_at IS NULL ORDER BY reason");
    assert.deepEqual(pending.rows.map((x) => x.reason), ["invalid_json", "wrong_type"]);
    assert.match((await masq(["quarantine", "replay", "--all"], env)).out, /replayed 0\b/, "a second replay loads nothing again");
  });

  test("quarantine replay works page by page: 2,700 records over three pages, each replayed once, the rejected ones counted", async () => {
    await fx.reset();
    const queueUrl = fx.sqs.newQueue();
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url });
    // The pseudonym and data keys exist after a first run (of an empty queue).
    assert.equal((await masq(["run", "--drain"], env)).code, 0);
    const keys = await testKeys(fx.db);
    const n = 2700;
    const dk = await keys.dataKeys.reserve(n);
    const ids: string[] = [];
    const nonces: Buffer[] = [];
    const ciphertexts: Buffer[] = [];
    const reasons: string[] = [];
    for (let i = 0; i < n; i++) {
      const id = `m-page-${String(i).padStart(5, "0")}`;
      // Every ninth one is still rejected (not JSON); the others are what masq accepts now.
      const body = i % 9 === 0 ? `not json ${i}` : JSON.stringify({ user_id: `u-page-${i}`, app_version: "1.2.3", device_type: "android", ip: `10.0.${i >> 8}.${i & 255}`, device_id: `dev-${i % 50}`, locale: null });
      const sealed = seal(dk.key, Buffer.from(body), quarantineBodyAad(id));
      ids.push(id);
      nonces.push(sealed.nonce);
      ciphertexts.push(sealed.ciphertext);
      reasons.push(i % 9 === 0 ? "invalid_json" : "invalid_app_version");
    }
    keys.close();
    await fx.db.pool.query(
      `WITH l AS (INSERT INTO masq.ingest_ledger (message_id, outcome) SELECT unnest($1::text[]), 'quarantined')
       INSERT INTO masq.quarantine (message_id, reason, detail, body, body_length, sent_at, received_at, body_data_key_id, body_nonce, body_ciphertext)
       SELECT id, reason, 'test', NULL, 1, now(), now(), $4, nonce, ct FROM unnest($1::text[], $2::bytea[], $3::bytea[], $5::text[]) AS u(id, nonce, ct, reason)`,
      [ids, nonces, ciphertexts, dk.id, reasons],
    );
    const rejected = Math.ceil(n / 9);

    const dataKeys = async () => (await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.data_keys")).rows[0]!.n;
    const keysBefore = await dataKeys();
    // Not while a pseudonym key rotation runs: its passes rewrite what a replay would write.
    await fx.db.pool.query("INSERT INTO masq.pseudonym_rotation (from_version, to_version, switched_at, target_table, phase) VALUES (1, 1, now(), 'public.user_logins', 'vault')");
    const during = await masq(["quarantine", "replay", "--all"], env);
    await fx.db.pool.query("DELETE FROM masq.pseudonym_rotation");
    assert.equal(during.code, 1);
    assert.match(during.out, /rotation \(version 1 to 1, vault pass\) is in progress; replay after it has finished/);

    const dry = await masq(["quarantine", "replay", "--all", "--dry-run"], env);
    assert.equal(await dataKeys(), keysBefore, "a dry run draws no data key");
    assert.match(dry.out, new RegExp(`would replay ${n - rejected} record\\(s\\); still rejected: invalid_json ${rejected}\\b`));
    const r = await masq(["quarantine", "replay", "--all"], env);
    assert.equal(r.code, 1, "the invalid ones stay quarantined");
    assert.match(r.out, new RegExp(`replayed ${n - rejected}, already replayed or gone 0, refused by the table 0, still rejected by masq \\(left quarantined\\): invalid_json ${rejected}\\b`));
    const c = await fx.db.pool.query<{ rows: number; users: number; pending: number }>(
      `SELECT (SELECT count(*)::int FROM public.user_logins) AS rows, (SELECT count(DISTINCT user_id)::int FROM public.user_logins) AS users,
              (SELECT count(*)::int FROM masq.quarantine WHERE replayed_at IS NULL) AS pending`,
    );
    assert.deepEqual(c.rows[0], { rows: n - rejected, users: n - rejected, pending: rejected });
    assert.equal(await dataKeys(), keysBefore + 1, "the replay itself sealed the values under a data key of its own");
    assert.match((await masq(["quarantine", "replay", "--all"], env)).out, /replayed 0\b/, "a second replay loads nothing again");
  });
});
