import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import pg from "pg";
import { openAuditKey } from "../../src/keys/audit-key.ts";

import { commitMessages } from "../../src/ingest/commit-batch.ts";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { rotatePseudonymKey } from "../../src/lifecycle/rotate-pseudonym-key.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { TABLE, TEST_KEY, TEST_MASTER_KEY, TEST_MASTER_KEY_HEX, testKeys } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";
import { decryptVault } from "../helpers/vault-check.ts";

const login = (user: string, ip: string, device: string, deviceType = "ios") =>
  JSON.stringify({ user_id: user, app_version: "5.2.19", device_type: deviceType, ip, locale: "US", device_id: device });

/**
 * What a holder of masq_erase must not be able to do with the erase and prune functions (SECURITY.md, "Erasure"),
 * and the states in which they must refuse: the review's findings against `masq subject erase` and `masq vault prune`.
 */
describe("masq subject erase and vault prune: guards", () => {
  const fx = usePipelineFixture();
  const env = () => ({ DATABASE_URL: fx.pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_PSEUDONYM_KEY: Buffer.from(TEST_KEY).toString("hex"), MASQ_LOG_LEVEL: "silent" });
  const provider = () => new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY), []);
  const count = async (sql: string, values: unknown[] = []) => Number((await fx.db.pool.query<{ n: string }>(sql, values)).rows[0]!.n);
  const recoverable = async () => {
    const p = provider();
    try {
      return new Set((await decryptVault(fx.db.pool, p)).map((v) => v.value));
    } finally {
      p.close();
    }
  };
  const auditKey = async () => {
    const p = provider();
    try {
      return await openAuditKey(fx.db.pool, p);
    } finally {
      p.close();
    }
  };

  /** A login holding masq_erase, and a client connected as it. */
  const eraser = async () => {
    const name = `t_eve_${randomBytes(4).toString("hex")}`;
    const password = randomBytes(12).toString("hex");
    await fx.db.pool.query(`CREATE ROLE ${name} LOGIN PASSWORD '${password}'; GRANT masq_erase TO ${name}`);
    const u = new URL(fx.pgdb.url);
    u.username = name;
    u.password = password;
    const c = new pg.Client({ connectionString: u.toString() });
    await c.connect();
    return {
      name,
      url: u.toString(),
      c,
      async drop() {
        await c.end().catch(() => undefined);
        await fx.db.pool.query(`ALTER ROLE ${name} NOSUPERUSER`).catch(() => undefined);
        await fx.db.pool.query(`DROP OWNED BY ${name}`).catch(() => undefined);
        await fx.db.pool.query(`DROP ROLE IF EXISTS ${name}`).catch(() => undefined);
      },
    };
  };
  const superuser = async (role: string) => (await fx.db.pool.query<{ s: boolean }>("SELECT rolsuper AS s FROM pg_roles WHERE rolname = $1", [role])).rows[0]!.s;
  const start = (table: string) =>
    `SELECT masq.audit_subject_erase('attack', '{}', 'v1:${"0".repeat(32)}', '${table}', 'x', false, false, 1)`;

  test("finding 1: a temporary table with a trigger is refused, and the login does not become superuser", async () => {
    await fx.reset();
    await auditKey();
    const eve = await eraser();
    try {
      await eve.c.query("CREATE TEMP TABLE t (user_id text, masked_ip text, masked_device_id text, create_date date)");
      await eve.c.query("INSERT INTO t VALUES ('x', 'a', 'b', '2000-01-01')");
      await eve.c.query(`CREATE FUNCTION pg_temp.evil() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN EXECUTE format('ALTER ROLE %I SUPERUSER', session_user); RETURN OLD; END $$`);
      await eve.c.query("CREATE TRIGGER evil BEFORE DELETE ON t FOR EACH ROW EXECUTE FUNCTION pg_temp.evil()");
      await eve.c.query("BEGIN");
      try {
        const s = (await eve.c.query<{ s: string }>(`${start("pg_temp.t")}::text AS s`)).rows[0]!.s;
        await eve.c.query("SELECT * FROM masq.erase_subject_batch($1, 10)", [s]);
        await eve.c.query("SELECT masq.audit_seal($1, $2)", [s, Buffer.alloc(32)]);
        await eve.c.query("COMMIT");
      } catch (err) {
        await eve.c.query("ROLLBACK");
        assert.match(String(err), /is not a table masq writes/);
      }
      assert.equal(await superuser(eve.name), false, "the trigger never ran as the owner");
      for (const sql of [
        `SELECT * FROM masq.audit_subject_erase_preview('attack', '{}', 'v1:${"0".repeat(32)}', 'pg_temp.t', 'x', false, false, 1)`,
        "SELECT * FROM masq.vault_prune_batch('pg_temp.t', 30, NULL, NULL, 100, '{}', NULL)",
      ]) {
        await assert.rejects(eve.c.query(sql), /is not a table masq writes/, sql);
      }
      assert.equal(await count("SELECT count(*) AS n FROM masq.erasures"), 0);
    } finally {
      await eve.drop();
    }
  });

  test("finding 7: a real table with the same columns that masq does not write is refused", async () => {
    await fx.reset();
    await auditKey();
    await fx.db.pool.query("CREATE TABLE public.logins_backup (user_id text, masked_ip text, masked_device_id text, create_date date)");
    await fx.db.pool.query("INSERT INTO public.logins_backup VALUES ('x', 'a', 'b', '2000-01-01')");
    const eve = await eraser();
    try {
      for (const sql of [
        start("public.logins_backup"),
        `SELECT * FROM masq.audit_subject_erase_preview('attack', '{}', 'v1:${"0".repeat(32)}', 'public.logins_backup', 'x', false, false, 1)`,
        "SELECT * FROM masq.vault_prune_batch('public.logins_backup', 30, NULL, NULL, 100, '{}', NULL)",
      ]) {
        await assert.rejects(eve.c.query(sql), /is not a table masq writes/, sql);
      }
      const r = await runMasq(["subject", "erase", "--user-id", "x", "--reason", "backup copy", "--table", "public.logins_backup"], { ...env(), DATABASE_URL: eve.url });
      assert.notEqual(r.code, 0);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.equal(await count("SELECT count(*) AS n FROM public.logins_backup"), 1);
    } finally {
      await eve.drop();
      await fx.db.pool.query("DROP TABLE public.logins_backup");
    }
  });

  test("finding 3: db_rejected records: erasing amy keeps the value bob's refused row uses, and erases amy's own", async () => {
    await fx.reset();
    // The table refuses blackberry rows: they are kept as db_rejected records, whose copy is the masked row.
    await fx.db.pool.query("ALTER TABLE public.user_logins ADD CONSTRAINT guards_no_blackberry CHECK (device_type <> 'blackberry')");
    const keys = await testKeys(fx.db);
    const now = new Date();
    const m = (id: string, body: string) => ({ messageId: id, body, sentAt: now, receivedAt: now });
    try {
      await commitMessages(fx.db.pool, TABLE, keys, [
        m("a-1", login("amy", "198.18.0.1", "dev-amy")),
        m("a-2", login("amy", "198.18.0.2", "dev-amy-bb", "blackberry")),
        m("b-1", login("bob", "198.18.0.1", "dev-bob-bb", "blackberry")),
      ]);
    } finally {
      keys.close();
      await fx.db.pool.query("ALTER TABLE public.user_logins DROP CONSTRAINT guards_no_blackberry");
    }
    assert.equal(await count("SELECT count(*) AS n FROM masq.quarantine WHERE reason = 'db_rejected'"), 2);
    const dry = await runMasq(["subject", "erase", "--user-id", "amy", "--dry-run"], env());
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /quarantine records\s+1\n/);
    assert.match(dry.stdout, /vault values\s+3 /, "dev-amy, 198.18.0.2 and dev-amy-bb; 198.18.0.1 is bob's too");
    const r = await runMasq(["subject", "erase", "--user-id", "amy", "--reason", "erasure request DSR-G3"], env());
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /quarantine records\s+1\n/);
    assert.match(r.stdout, /vault values\s+3 /);
    const values = await recoverable();
    for (const v of ["dev-amy", "198.18.0.2", "dev-amy-bb"]) assert.ok(!values.has(v), `${v}: amy's own db_rejected record's values are gone`);
    for (const v of ["198.18.0.1", "dev-bob-bb"]) assert.ok(values.has(v), `${v}: bob's refused row can still be replayed`);
    assert.equal(await count("SELECT count(*) AS n FROM masq.quarantine WHERE user_id = 'amy'"), 0);
    assert.equal(await count("SELECT count(*) AS n FROM masq.quarantine WHERE user_id = 'bob'"), 1);
    const p = createPseudonymizer(TEST_KEY);
    const bobs = await fx.db.pool.query<{ ip: string; dev: string }>(
      "SELECT masked_ip AS ip, masked_device_id AS dev FROM masq.quarantine WHERE user_id = 'bob'",
    );
    assert.deepEqual(bobs.rows, [{ ip: p.pseudonymize("ip", "198.18.0.1"), dev: p.pseudonymize("device_id", "dev-bob-bb") }]);
  });

  test("finding 4: erase (dry run too) and prune refuse while a pseudonym key rotation is stopped mid-way; after --resume they run", async () => {
    await fx.reset();
    await fx.db.pool.query("DELETE FROM masq.pseudonym_keys"); // the other tests' key was given in MASQ_PSEUDONYM_KEY
    // Ingested under masq's managed pseudonym key (a key given in MASQ_PSEUDONYM_KEY cannot be rotated).
    const keys = await testKeys(fx.db, { pseudonymKey: null });
    const now = new Date();
    try {
      await commitMessages(
        fx.db.pool,
        TABLE,
        keys,
        Array.from({ length: 30 }, (_, i) => ({ messageId: `r-${i}`, body: login(i % 2 === 0 ? "uma" : "vic", `198.18.1.${i % 7}`, `dev-${i % 5}`), sentAt: now, receivedAt: now })),
      );
    } finally {
      keys.close();
    }
    const abort = new AbortController();
    const stopped = await rotatePseudonymKey({ pool: fx.db.pool, provider: provider(), table: TABLE, batchSize: 5, resume: false, signal: abort.signal, onBatch: (_p, done) => done > 0 && abort.abort() });
    assert.equal(stopped.outcome, "stopped");
    assert.equal(await count("SELECT count(*) AS n FROM masq.pseudonym_rotation"), 1);
    const vaultBefore = await count("SELECT count(*) AS n FROM masq.vault");
    const managed = { DATABASE_URL: fx.pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_LOG_LEVEL: "silent", MASQ_VAULT_RETENTION_DAYS: "30" };
    for (const args of [
      ["subject", "erase", "--user-id", "uma", "--reason", "erasure request DSR-G4"],
      ["subject", "erase", "--user-id", "uma", "--dry-run"],
      ["vault", "prune"],
    ]) {
      const r = await runMasq(args, managed);
      assert.equal(r.code, 1, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /^masq: a pseudonym key rotation is in progress \(masq\.pseudonym_rotation\): finish it first with masq rotate pseudonym-key --resume .*\n$/, args.join(" "));
    }
    assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'uma'"), 15, "nothing was erased");
    assert.equal(await count("SELECT count(*) AS n FROM masq.vault"), vaultBefore);
    assert.equal(await count("SELECT count(*) AS n FROM masq.erasures"), 0);

    assert.equal((await rotatePseudonymKey({ pool: fx.db.pool, provider: provider(), table: TABLE, batchSize: 100, resume: true })).outcome, "finished");
    const r = await runMasq(["subject", "erase", "--user-id", "uma", "--reason", "erasure request DSR-G4, after the rotation"], managed);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'uma'"), 0);
    // The other tests give their key in MASQ_PSEUDONYM_KEY.
    await fx.reset();
    await fx.db.pool.query("DELETE FROM masq.pseudonym_keys");
  });

  test("finding 9: no empty user id; the start row's selector is the server's; erasures nobody resumed are purged after a day", async () => {
    await fx.reset();
    await auditKey();
    const eve = await eraser();
    try {
      await assert.rejects(eve.c.query(`SELECT masq.audit_subject_erase('x', '{}', 'v1:${"0".repeat(32)}', 'public.user_logins', '', false, false, 1)`), /a user id is 1 to 128 characters/);
      await assert.rejects(
        eve.c.query(`SELECT * FROM masq.audit_subject_erase_preview('x', '{}', 'v1:${"0".repeat(32)}', 'public.user_logins', '', false, false, 1)`),
        /a user id is 1 to 128 characters/,
      );
    } finally {
      await eve.drop();
    }
    // Killed runs: one of "wes" two days ago (resumed by wes's erasure below), one of "xia" two days ago and one of
    // "yan" an hour ago (neither resumed).
    await fx.db.pool.query(`INSERT INTO masq.erasures (seq, login_role, target, user_id, vault_only, rows, started_at, touched_at) VALUES
      (-1, 'someone', 'public.user_logins', 'wes', false, 5, now() - interval '2 days', now() - interval '2 days'),
      (-2, 'someone', 'public.user_logins', 'xia', false, 0, now() - interval '2 days', now() - interval '2 days'),
      (-3, 'someone', 'public.user_logins', 'yan', false, 0, now() - interval '1 hour', now() - interval '1 hour')`);
    const r = await runMasq(["subject", "erase", "--user-id", "wes", "--reason", "erasure request DSR-G9"], env());
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /rows\s+5\n/, "wes's killed run was taken over, not purged");
    assert.deepEqual((await fx.db.pool.query<{ user_id: string }>("SELECT user_id FROM masq.erasures ORDER BY seq")).rows, [{ user_id: "yan" }]);
    const start = await fx.db.pool.query<{ selector: Record<string, unknown> }>("SELECT selector FROM masq.audit WHERE action = 'subject-erase' AND selector->>'phase' = 'start' ORDER BY seq DESC LIMIT 1");
    assert.deepEqual(Object.keys(start.rows[0]!.selector).sort(), ["command", "everyTable", "phase", "resumes", "table", "vaultOnly"]);
    assert.deepEqual(start.rows[0]!.selector.resumes, [-1]);
  });

  test("finding 6: a stream of overlapping ingest batches does not starve an erase batch, and ingestion keeps running", async () => {
    await fx.reset();
    const keys = await testKeys(fx.db);
    const now = new Date();
    try {
      await commitMessages(fx.db.pool, TABLE, keys, Array.from({ length: 20 }, (_, i) => ({ messageId: `s-${i}`, body: login("zed", `198.18.2.${i}`, `dev-zed-${i}`), sentAt: now, receivedAt: now })));
    } finally {
      keys.close();
    }
    // Ingest batches that overlap: the next one takes the epoch before the one holding it commits, so that one always
    // holds it. With row share locks each new one was granted at once, ahead of the deleter waiting for the row.
    let stop = false;
    let batches = 0;
    let batchesAfterErase = 0;
    let erased = false;
    const clients = [0, 1].map(() => new pg.Client({ connectionString: fx.pgdb.url }));
    await Promise.all(clients.map((c) => c.connect()));
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const writers = (async () => {
      let cur = 0;
      await clients[cur]!.query("BEGIN; SELECT masq.lock_vault_epoch()");
      while (!stop) {
        const next = 1 - cur;
        const taken = clients[next]!.query("BEGIN; SELECT masq.lock_vault_epoch()");
        await pause(100);
        await clients[cur]!.query("COMMIT");
        await taken;
        batches++;
        if (erased) batchesAfterErase++;
        cur = next;
      }
      await clients[cur]!.query("COMMIT");
    })();
    try {
      while (batches < 6) await new Promise((r) => setTimeout(r, 50));
      // Liveness, not speed: before the fix this erase never finished (the bound only keeps the test from hanging).
      const erase = runMasq(["subject", "erase", "--user-id", "zed", "--reason", "erasure request DSR-G6"], env());
      const r = await Promise.race([erase, new Promise<undefined>((res) => setTimeout(() => res(undefined), 60_000).unref())]);
      assert.ok(r !== undefined, "the erase finished while ingestion kept running");
      assert.equal(r.code, 0, r.stderr);
      erased = true;
      const at = batches;
      while (batches < at + 6) await new Promise((res) => setTimeout(res, 50));
    } finally {
      stop = true;
      await writers;
      await Promise.all(clients.map((c) => c.end()));
    }
    assert.ok(batchesAfterErase > 0, "ingestion went on");
    assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'zed'"), 0);
  });

  test("finding 3, retention: a recent db_rejected record keeps the values of its masked row", async () => {
    await fx.reset();
    await fx.db.pool.query("ALTER TABLE public.user_logins ADD CONSTRAINT guards_no_blackberry CHECK (device_type <> 'blackberry')");
    const keys = await testKeys(fx.db);
    const old = new Date(Date.now() - 100 * 86_400_000);
    const now = new Date();
    try {
      await commitMessages(fx.db.pool, TABLE, keys, [
        { messageId: "p-1", body: login("pat", "198.18.3.1", "dev-pat-old"), sentAt: old, receivedAt: old },
        { messageId: "p-2", body: login("pat", "198.18.3.1", "dev-pat-bb", "blackberry"), sentAt: now, receivedAt: now },
      ]);
    } finally {
      keys.close();
      await fx.db.pool.query("ALTER TABLE public.user_logins DROP CONSTRAINT guards_no_blackberry");
    }
    const r = await runMasq(["vault", "prune"], { ...env(), MASQ_VAULT_RETENTION_DAYS: "30" });
    assert.equal(r.code, 0, r.stderr);
    const values = await recoverable();
    assert.ok(!values.has("dev-pat-old"), "only the old row used it");
    assert.ok(values.has("198.18.3.1") && values.has("dev-pat-bb"), "the refused row can still be replayed");
  });
});
