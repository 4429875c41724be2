import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import pg from "pg";
import { openAuditKey, subjectFingerprint } from "../../src/keys/audit-key.ts";
import { sendBodies } from "../../src/ops/demo.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { makeRunner, TEST_KEY, TEST_MASTER_KEY, TEST_MASTER_KEY_HEX, waitFor } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";
import { decryptVault, vaultBytes } from "../helpers/vault-check.ts";

const login = (user: string, ip: string, device: string) =>
  JSON.stringify({ user_id: user, app_version: "5.2.19", device_type: "ios", ip, locale: "US", device_id: device });
/** Quarantined (no device_type), but its redacted copy names the user and shows ip and device_id as pseudonyms. */
const refused = (user: string, ip: string, device: string) => JSON.stringify({ user_id: user, app_version: "5.2.19", ip, locale: "US", device_id: device });

/**
 * `masq subject erase`: nothing of the user stays recoverable, other users' values (shared ones included) do; dry
 * runs change nothing; reruns find nothing; a killed run is finished by the next; ingestion running meanwhile
 * never leaves a row whose value is gone; the trail names the user only by fingerprint and verifies.
 */
describe("masq subject erase", () => {
  const fx = usePipelineFixture();
  const env = () => ({ DATABASE_URL: fx.pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_PSEUDONYM_KEY: Buffer.from(TEST_KEY).toString("hex"), MASQ_LOG_LEVEL: "silent" });
  const provider = () => new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY), []);

  const ingest = async (bodies: string[]) => {
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, bodies);
    await (await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl })).run({ drain: true });
  };
  const recoverable = async () => {
    const p = provider();
    try {
      return new Set((await decryptVault(fx.db.pool, p)).map((v) => v.value));
    } finally {
      p.close();
    }
  };
  const count = async (sql: string, values: unknown[] = []) => Number((await fx.db.pool.query<{ n: string }>(sql, values)).rows[0]!.n);
  /** Rows whose masked_ip or masked_device_id has no vault entry: values that can never be recovered. */
  const orphanRows = () =>
    count(`SELECT count(*) AS n FROM public.user_logins t
           WHERE NOT EXISTS (SELECT 1 FROM masq.vault v WHERE v.kind = 'ip' AND v.pseudonym = t.masked_ip)
              OR NOT EXISTS (SELECT 1 FROM masq.vault v WHERE v.kind = 'device_id' AND v.pseudonym = t.masked_device_id)`);
  const fingerprint = async (userId: string) => {
    const p = provider();
    try {
      const key = await openAuditKey(fx.db.pool, p);
      return subjectFingerprint(key, userId);
    } finally {
      p.close();
    }
  };

  test("erases the user's rows, quarantine records and private vault values; shared values and other users stay; dry run and rerun change nothing", async () => {
    await fx.reset();
    await ingest([
      login("alice", "198.51.100.1", "dev-alice-1"),
      login("alice", "198.51.100.2", "dev-alice-1"),
      login("alice", "203.0.113.50", "dev-alice-2"),
      login("bob", "203.0.113.50", "dev-bob"),
      refused("alice", "198.51.100.3", "dev-alice-3"),
      refused("bob", "198.51.100.9", "dev-bob"),
    ]);
    assert.equal(await count("SELECT count(*) AS n FROM masq.quarantine WHERE user_id = 'alice'"), 1);
    const tableBefore = await count("SELECT count(*) AS n FROM public.user_logins");
    const vaultBefore = await vaultBytes(fx.db.pool);

    const dry = await runMasq(["subject", "erase", "--user-id", "alice", "--dry-run"], env());
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /nothing was changed/);
    assert.match(dry.stdout, /rows\s+3\n/);
    assert.match(dry.stdout, /quarantine records\s+1\n/);
    // 198.51.100.1, .2, dev-alice-1, dev-alice-2 (203.0.113.50 is bob's too).
    assert.match(dry.stdout, /vault values\s+4 /);
    assert.equal(await count("SELECT count(*) AS n FROM public.user_logins"), tableBefore);
    assert.deepEqual(await vaultBytes(fx.db.pool), vaultBefore);
    // A dry run changes nothing but the trail: its counts say whether the user exists, so it is recorded (review finding 7).
    assert.match(dry.stdout, /audit row\s+#\d+ \(preview\)/);
    const preview = await fx.db.pool.query<{ seq: string; selector: Record<string, unknown>; subjects: string[] }>("SELECT seq::text, selector, subjects FROM masq.audit WHERE action = 'subject-erase'");
    assert.equal(preview.rows.length, 1);
    assert.deepEqual(preview.rows[0]!.selector, { phase: "preview", table: "public.user_logins", vaultOnly: false, everyTable: true, rows: 3, quarantine: 1, originals: 0, vault: 4 });
    assert.deepEqual(preview.rows[0]!.subjects, [await fingerprint("alice")]);

    const noReason = await runMasq(["subject", "erase", "--user-id", "alice"], env());
    assert.equal(noReason.code, 2);
    assert.match(noReason.stderr, /--reason/);

    const r = await runMasq(["subject", "erase", "--user-id", "alice", "--reason", "erasure request DSR-1"], env());
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.includes("alice") && !r.stderr.includes("alice"), "the id is not printed");
    assert.match(r.stdout, /rows\s+3\n/);
    assert.match(r.stdout, /vault values\s+4 /);
    assert.match(r.stdout, /run the same command again/);

    assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'alice'"), 0);
    assert.equal(await count("SELECT count(*) AS n FROM masq.quarantine WHERE user_id = 'alice'"), 0);
    assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'bob'"), 1);
    assert.equal(await count("SELECT count(*) AS n FROM masq.quarantine WHERE user_id = 'bob'"), 1);
    const values = await recoverable();
    for (const v of ["198.51.100.1", "198.51.100.2", "dev-alice-1", "dev-alice-2"]) assert.ok(!values.has(v), "nothing of alice's is recoverable");
    for (const v of ["203.0.113.50", "dev-bob"]) assert.ok(values.has(v), "bob's values stay, the shared one too");
    assert.equal(await orphanRows(), 0);

    // The trail: an intent row and a done row, naming alice by fingerprint only, with the counts; and it verifies.
    const audit = await fx.db.pool.query<{ seq: string; subjects: string[]; reason: string; selector: Record<string, unknown>; whole: string }>(
      "SELECT seq::text, subjects, reason, selector, a::text AS whole FROM masq.audit a WHERE action = 'subject-erase' AND selector->>'phase' <> 'preview' ORDER BY seq",
    );
    assert.equal(audit.rows.length, 2);
    const fp = await fingerprint("alice");
    for (const a of audit.rows) {
      assert.deepEqual(a.subjects, [fp]);
      assert.equal(a.reason, "erasure request DSR-1");
      assert.ok(!a.whole.includes("alice"), "no audit row holds the id");
    }
    assert.equal(audit.rows[0]!.selector.phase, "start");
    assert.deepEqual(
      { ...audit.rows[1]!.selector, start: undefined, resumes: undefined },
      { phase: "done", start: undefined, table: "public.user_logins", vaultOnly: false, resumes: undefined, rows: 3, quarantine: 1, originals: 0, vault: 4 },
    );
    const verify = await runMasq(["audit", "verify"], env());
    assert.equal(verify.code, 0, verify.stderr);
    const listed = await runMasq(["audit", "list", "--user-id", "alice", "--json"], env());
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual((JSON.parse(listed.stdout) as { seq: number }[]).map((x) => String(x.seq)), [preview.rows[0]!.seq, ...audit.rows.map((a) => a.seq)].reverse());

    // Idempotent: the second run finds nothing and says so.
    const again = await runMasq(["subject", "erase", "--user-id", "alice", "--reason", "erasure request DSR-1, rerun"], env());
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /Nothing of this user was left to erase/);
    assert.deepEqual(await recoverable(), values);
  });

  test("--vault-only keeps the rows but leaves none of the user's values recoverable", async () => {
    await fx.reset();
    await ingest([
      login("carol", "192.0.2.1", "dev-carol"),
      login("carol", "192.0.2.77", "dev-carol"),
      login("dave", "192.0.2.77", "dev-dave"),
      refused("carol", "192.0.2.5", "dev-carol-q"),
    ]);
    const r = await runMasq(["subject", "erase", "--user-id", "carol", "--vault-only", "--reason", "erasure request DSR-2"], env());
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'carol'"), 2);
    assert.equal(await count("SELECT count(*) AS n FROM masq.quarantine WHERE user_id = 'carol' AND body_ciphertext IS NULL"), 1, "the quarantined original is gone");
    const values = await recoverable();
    assert.ok(!values.has("192.0.2.1") && !values.has("dev-carol"));
    assert.ok(values.has("192.0.2.77") && values.has("dev-dave"));
    const again = await runMasq(["subject", "erase", "--user-id", "carol", "--vault-only", "--reason", "erasure request DSR-2"], env());
    assert.match(again.stdout, /Nothing of this user was left/);
  });

  test("a run killed mid-way is finished by the next one", async () => {
    await fx.reset();
    // Enough rows for several batches, each with values of its own.
    const bodies = Array.from({ length: 7000 }, (_, i) => login("erin", `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, `dev-erin-${i}`));
    await ingest([...bodies, login("frank", "10.0.0.1", "dev-frank")]);
    const rows = await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'erin'");
    assert.equal(rows, 7000);
    // Once a batch committed, hold the epoch as an ingest batch in flight would: the next batch waits; kill it there.
    // The holder watches from inside the server (a poll from here could miss every batch: a batch takes milliseconds).
    const holder = new pg.Client({ connectionString: fx.pgdb.url });
    await holder.connect();
    try {
      await holder.query("BEGIN");
      const held = holder.query(
        `DO $$ BEGIN
           WHILE (SELECT count(*) FROM public.user_logins WHERE user_id = 'erin') >= ${rows} AND clock_timestamp() < now() + interval '60 s' LOOP
             PERFORM pg_sleep(0.002);
           END LOOP;
           PERFORM masq.lock_vault_epoch();
         END $$`,
      );
      const erase = spawnMasq(["subject", "erase", "--user-id", "erin", "--reason", "erasure request DSR-3"], env());
      await held;
      erase.child.kill("SIGKILL");
      await erase.exited;
      await holder.query("COMMIT");
    } finally {
      await holder.end();
    }
    const left = await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'erin'");
    assert.ok(left > 0 && left < rows, `killed mid-way (${left} rows left)`);
    assert.equal(await count("SELECT count(*) AS n FROM masq.erasures"), 1, "the erasure is unfinished");
    assert.equal(await orphanRows(), 0, "each batch is a transaction: the kill left no row without its values");

    const rerun = await runMasq(["subject", "erase", "--user-id", "erin", "--reason", "erasure request DSR-3, resumed"], env());
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.match(rerun.stdout, /rows\s+7000\n/, "the counts include the killed run's");
    assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'erin'"), 0);
    assert.equal(await count("SELECT count(*) AS n FROM masq.erasures"), 0);
    const values = await recoverable();
    assert.deepEqual([...values].sort(), ["10.0.0.1", "dev-frank"]);
    const done = await fx.db.pool.query<{ selector: { resumes: string[] } }>(
      "SELECT selector FROM masq.audit WHERE action = 'subject-erase' AND selector->>'phase' = 'done' AND subjects = ARRAY[$1]",
      [await fingerprint("erin")],
    );
    assert.equal(done.rows.length, 1);
    assert.equal(done.rows[0]!.selector.resumes.length, 1, "the done row names the run it finished");
    assert.equal((await runMasq(["audit", "verify"], env())).code, 0);
  });

  test("concurrent ingestion: erasing while masq run ingests the same user's messages leaves every row recoverable", async () => {
    await fx.reset();
    const queueUrl = fx.sqs.newQueue();
    const run = spawnMasq(["run"], masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { MASQ_WAIT_TIME_SECONDS: "1", MASQ_LOG_LEVEL: "warn" } }));
    let sent = 0;
    const send = async (n: number) => {
      // The same few values again and again: the running masq seals each once and then leaves it out.
      const bodies = Array.from({ length: n }, (_, i) =>
        i % 2 === 0 ? login("gina", `172.16.0.${i % 4}`, `dev-gina-${i % 3}`) : login("hank", `172.16.0.${i % 4}`, "dev-hank"),
      );
      await sendBodies(fx.sqs.client, queueUrl, bodies);
      sent += n;
    };
    const ingested = () => count("SELECT count(*) AS n FROM masq.ingest_ledger");
    try {
      // 1. The running masq commits gina's values, and remembers them.
      await send(40);
      await waitFor(async () => (await ingested()) === sent, 60_000, "the first messages");
      // 2. Erased: gina's private values leave the vault, while masq still believes they are there.
      const first = await runMasq(["subject", "erase", "--user-id", "gina", "--reason", "erasure request DSR-4"], env());
      assert.equal(first.code, 0, first.stderr);
      // 3. gina logs in again with the same device: new data, whose value must be in the vault again.
      await send(40);
      await waitFor(async () => (await ingested()) === sent, 60_000, "the messages after the erasure");
      assert.equal(await orphanRows(), 0, "rows written after an erasure have their values");
      // 4. Erasures while messages keep arriving.
      const sender = (async () => {
        for (let i = 0; i < 10; i++) await send(30);
      })();
      for (let i = 0; i < 3; i++) {
        const r = await runMasq(["subject", "erase", "--user-id", "gina", "--reason", `erasure request DSR-4, pass ${i}`], env());
        assert.equal(r.code, 0, r.stderr);
      }
      await sender;
      await waitFor(async () => (await ingested()) === sent, 60_000, "the queue drained");
      assert.equal(await orphanRows(), 0, "every remaining row's values are recoverable");
      // 5. Once the queue is drained, the rerun the summary asks for leaves nothing of gina.
      const last = await runMasq(["subject", "erase", "--user-id", "gina", "--reason", "erasure request DSR-4, after drain"], env());
      assert.equal(last.code, 0, last.stderr);
      assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'gina'"), 0);
      const values = await recoverable();
      for (const v of ["dev-gina-0", "dev-gina-1", "dev-gina-2"]) assert.ok(!values.has(v));
      assert.ok(values.has("dev-hank") && values.has("172.16.0.1"), "hank's values, shared with gina, stay");
      assert.equal(await orphanRows(), 0);
      assert.equal((await runMasq(["audit", "verify"], env())).code, 0);
    } finally {
      run.child.kill("SIGTERM");
      await run.exited;
    }
  });

  test("roles: refused without masq_erase in one line; masq_erase erases, but cannot read ciphertext or delete by plain SQL", async () => {
    await fx.reset();
    await ingest([login("ivan", "192.0.2.200", "dev-ivan"), login("judy", "192.0.2.201", "dev-judy")]);
    const tag = randomBytes(4).toString("hex");
    const [eraser, nobody] = [`t_eraser_${tag}`, `t_nobody_${tag}`];
    const password = randomBytes(12).toString("hex");
    await fx.db.pool.query(`CREATE ROLE ${eraser} LOGIN PASSWORD '${password}'; GRANT masq_erase TO ${eraser}; CREATE ROLE ${nobody} LOGIN PASSWORD '${password}'`);
    const as = (role: string) => {
      const u = new URL(fx.pgdb.url);
      u.username = role;
      u.password = password;
      return u.toString();
    };
    try {
      const denied = await runMasq(["subject", "erase", "--user-id", "ivan", "--reason", "no role"], { ...env(), DATABASE_URL: as(nobody) });
      assert.equal(denied.code, 1);
      assert.match(denied.stderr, /^masq: permission denied \(.*\): erasing needs the masq_erase role \(GRANT masq_erase TO <your login>\); nothing was erased\n$/);
      assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'ivan'"), 1);

      const c = new pg.Client({ connectionString: as(eraser) });
      await c.connect();
      try {
        for (const sql of [
          "SELECT nonce, ciphertext FROM masq.vault LIMIT 1",
          "SELECT body_ciphertext FROM masq.quarantine LIMIT 1",
          "SELECT wrapped FROM masq.data_keys LIMIT 1",
          "SELECT wrapped FROM masq.pseudonym_keys LIMIT 1",
          "DELETE FROM masq.vault",
          "DELETE FROM masq.quarantine",
          "DELETE FROM public.user_logins",
          "SELECT count(*) FROM public.user_logins",
          "SELECT * FROM masq.erasures",
          "UPDATE masq.vault_epoch SET epoch = 0",
          "SELECT masq.advance_vault_epoch()",
          "SELECT masq.audit_append('subject-erase', 'forged row', '{}', '{}', '{}', 1)",
          "SELECT * FROM masq.vault_ciphertexts(1)",
        ]) {
          await assert.rejects(c.query(sql), /permission denied/, sql);
        }
        await assert.rejects(c.query("SELECT * FROM masq.erase_subject_batch(1, 10)"), /no erasure 1 in progress of this login/);
      } finally {
        await c.end();
      }
      const ok = await runMasq(["subject", "erase", "--user-id", "ivan", "--reason", "erasure request DSR-5"], { ...env(), DATABASE_URL: as(eraser) });
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'ivan'"), 0);
      assert.equal(await count("SELECT count(*) AS n FROM masq.audit WHERE action = 'subject-erase' AND login_role = $1", [eraser]), 2);
    } finally {
      for (const r of [eraser, nobody]) {
        await fx.db.pool.query(`DROP OWNED BY ${r}`).catch(() => undefined);
        await fx.db.pool.query(`DROP ROLE IF EXISTS ${r}`).catch(() => undefined);
      }
    }
  });
});
