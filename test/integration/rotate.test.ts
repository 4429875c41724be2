import { factsOfJson, redactBody } from "../../src/ingest/quarantine-body.ts";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import pg from "pg";
import { prepareDatabase } from "../../src/db/prepare-database.ts";
import { LEGACY_MIGRATIONS_DIR, loadMigrations, migrate } from "../../src/db/migrate.ts";
import { ensureTargetTable } from "../../src/db/tables.ts";
import { sendBodies } from "../../src/ops/demo.ts";
import type { SyntheticEvent } from "../../src/ops/synthetic-events.ts";
import { ConfigError } from "../../src/errors.ts";
import { createLogger } from "../../src/log.ts";
import { commitMessages } from "../../src/ingest/commit-batch.ts";
import type { Pseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { PrepareThreads } from "../../src/ingest/prepare-threads.ts";
import { rotatePseudonymKey, type RotatePseudonymKeyOptions } from "../../src/lifecycle/rotate-pseudonym-key.ts";
import type { RotationPhase } from "../../src/lifecycle/rotation-state.ts";
import { parseLoginEvent } from "../../src/ingest/login-event.ts";
import { open, quarantineBodyAad } from "../../src/keys/data-keys.ts";
import { unwrapDataKeys } from "../../src/keys/unwrap-data-keys.ts";
import { LocalKeyProvider, localMasterKeyId } from "../../src/keys/key-provider.ts";
import { pseudonymKeyVersion } from "../../src/keys/pseudonym-keys.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { runMasq } from "../helpers/run-masq.ts";
import { createDb, expectedCounts, makeRunner, TABLE, TEST_KEY, TEST_MASTER_KEY, TEST_MASTER_KEY_HEX, testKeys, uniqueEvents, waitFor } from "../helpers/pipeline.ts";
import { legacyLedgerTakesTodaysClaims } from "../helpers/legacy-ledger.ts";
import { createTestDatabase } from "../helpers/postgres.ts";
import { decryptVault, vaultBytes } from "../helpers/vault-check.ts";

/**
 * Key rotation with the local provider. What must hold after a pseudonym key rotation, however it ran (in one go,
 * interrupted and resumed, killed, or while ingestion kept writing): every pseudonym masq wrote is the new key's
 * (table, vault, quarantine bodies), none under the old key is left anywhere, the groups of rows sharing a value are
 * the same as before, and the vault still gives back exactly the original values.
 */
describe("key rotation", () => {
  const fx = usePipelineFixture();
  const provider = () => new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY));

  /** user_id → the original values of the row it was sent with. */
  function originals(events: readonly SyntheticEvent[]): Map<string, { ip: string; deviceId: string }> {
    const out = new Map<string, { ip: string; deviceId: string }>();
    for (const e of events) {
      const p = parseLoginEvent(e.body);
      if (p.ok) out.set(p.event.userId, { ip: p.event.ip, deviceId: p.event.deviceId });
    }
    return out;
  }

  /** Sends the events and drains them with a runner on the managed pseudonym key (not the tests' TEST_KEY override). */
  async function ingest(events: readonly SyntheticEvent[]): Promise<void> {
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(
      fx.sqs.client,
      queueUrl,
      events.map((e) => e.body),
    );
    const keys = await testKeys(fx.db, { pseudonymKey: null });
    try {
      const r = await (await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl, keys })).run({ drain: true });
      assert.equal(r.fatal, undefined);
    } finally {
      keys.close();
    }
  }

  /**
   * A fresh data set: valid rows with repeated ips and devices, quarantined bodies with pseudonyms in them, and one
   * db_rejected record (a row the table refused, kept as the masked row).
   */
  async function seed(count: number, seedValue: number): Promise<SyntheticEvent[]> {
    await fx.reset();
    const events = uniqueEvents(count, seedValue);
    const refused = [...originals(events).keys()][3]!;
    await fx.db.pool.query(`ALTER TABLE public.user_logins ADD CONSTRAINT rotate_test_refuses CHECK (user_id <> '${refused}')`);
    try {
      await ingest(events);
    } finally {
      await fx.db.pool.query("ALTER TABLE public.user_logins DROP CONSTRAINT rotate_test_refuses");
    }
    const q = await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.quarantine WHERE reason = 'db_rejected'");
    assert.equal(q.rows[0]!.n, 1);
    return events;
  }

  /** Rows grouped by a column's pseudonym, each group as its sorted user ids (unique per message): the duplicate groups. */
  async function groups(): Promise<{ ip: string[][]; device: string[][] }> {
    const { rows } = await fx.db.pool.query<{ user_id: string; masked_ip: string; masked_device_id: string }>(
      "SELECT user_id, masked_ip, masked_device_id FROM public.user_logins",
    );
    const partition = (col: "masked_ip" | "masked_device_id") => {
      const by = new Map<string, string[]>();
      for (const r of rows) by.set(r[col], [...(by.get(r[col]) ?? []), r.user_id]);
      return [...by.values()].map((g) => g.sort()).sort((a, b) => (a[0]! < b[0]! ? -1 : 1));
    };
    return { ip: partition("masked_ip"), device: partition("masked_device_id") };
  }

  /** Every pseudonym masq wrote: the table's, the vault's, and those in kept bodies. */
  async function writtenPseudonyms(): Promise<Set<string>> {
    const out = new Set<string>();
    const t = await fx.db.pool.query<{ a: string; b: string }>("SELECT masked_ip AS a, masked_device_id AS b FROM public.user_logins");
    for (const r of t.rows) out.add(r.a).add(r.b);
    for (const r of (await fx.db.pool.query<{ p: string }>("SELECT pseudonym AS p FROM masq.vault")).rows) out.add(r.p);
    for (const r of (await fx.db.pool.query<{ body: string }>("SELECT body FROM masq.quarantine WHERE body IS NOT NULL")).rows) {
      for (const m of r.body.matchAll(/hmac:([0-9a-f]{64})/g)) out.add(m[1]!);
      for (const m of r.body.matchAll(/"masked(?:Ip|DeviceId)":"([^"]+)"/g)) out.add(m[1]!);
    }
    return out;
  }

  async function activeKey(): Promise<{ version: number; p: Pseudonymizer }> {
    const { rows } = await fx.db.pool.query<{ version: number }>("SELECT version FROM masq.pseudonym_keys WHERE state = 'active'");
    const k = await pseudonymKeyVersion(fx.db.pool, provider(), rows[0]!.version);
    return { version: k.version, p: k.pseudonymizer };
  }

  /** Every row of the table carries the pseudonyms of its event's original values under `p`. */
  async function assertRowsUnder(p: Pseudonymizer, events: readonly SyntheticEvent[]) {
    const orig = originals(events);
    const rows = await fx.db.pool.query<{ user_id: string; masked_ip: string; masked_device_id: string }>("SELECT user_id, masked_ip, masked_device_id FROM public.user_logins");
    assert.ok(rows.rows.length > 0);
    for (const r of rows.rows) {
      const o = orig.get(r.user_id)!;
      assert.equal(r.masked_ip, p.pseudonymize("ip", o.ip), `masked_ip of ${r.user_id}`);
      assert.equal(r.masked_device_id, p.pseudonymize("device_id", o.deviceId), `masked_device_id of ${r.user_id}`);
    }
  }

  /** The state a finished rotation must leave, whatever happened on the way. */
  async function assertRotated(events: readonly SyntheticEvent[], before: { groups: Awaited<ReturnType<typeof groups>>; old: Set<string>; vaultSize: number; oldVersion: number }) {
    const { version, p } = await activeKey();
    assert.ok(version > before.oldVersion);
    const orig = originals(events);

    // The table: every row under the new key, computed from its original values; the groups unchanged.
    await assertRowsUnder(p, events);
    assert.deepEqual(await groups(), before.groups);

    // The vault: the same values, each under its new pseudonym, and each decrypts to the value it names.
    const vault = await decryptVault(fx.db.pool, provider());
    assert.equal(vault.length, before.vaultSize);
    for (const v of vault) {
      assert.equal(v.keyVersion, version);
      assert.equal(p.pseudonymize(v.kind, v.value), v.pseudonym);
    }
    const want = new Set([...orig.values()].flatMap((o) => [`ip ${o.ip}`, `device_id ${o.deviceId}`]));
    assert.deepEqual(new Set(vault.map((v) => `${v.kind} ${v.value}`)), want);

    // Kept bodies: redacted as ingestion would now; the db_rejected row carries the new pseudonyms.
    const q = await fx.db.pool.query<{
      message_id: string;
      reason: string;
      body: string;
      body_data_key_id: string | null;
      body_nonce: Buffer | null;
      body_ciphertext: Buffer | null;
      masked_ip: string | null;
      masked_device_id: string | null;
    }>("SELECT message_id, reason, body, body_data_key_id, body_nonce, body_ciphertext, masked_ip, masked_device_id FROM masq.quarantine WHERE body IS NOT NULL");
    const keys = await unwrapDataKeys(fx.db.pool, provider(), q.rows.flatMap((r) => (r.body_data_key_id ? [r.body_data_key_id] : [])));
    let redacted = 0;
    for (const r of q.rows) {
      if (r.reason === "db_rejected") {
        const row = JSON.parse(r.body) as { userId: string; maskedIp: string; maskedDeviceId: string };
        assert.equal(row.maskedIp, p.pseudonymize("ip", orig.get(row.userId)!.ip));
        assert.equal(row.maskedDeviceId, p.pseudonymize("device_id", orig.get(row.userId)!.deviceId));
        // The record's typed pseudonyms (102_ingest.sql) are rewritten with its copy.
        assert.deepEqual([r.masked_ip, r.masked_device_id], [row.maskedIp, row.maskedDeviceId]);
        continue;
      }
      const original = open(keys.get(r.body_data_key_id!)!, { nonce: r.body_nonce!, ciphertext: r.body_ciphertext! }, quarantineBodyAad(r.message_id)).toString("utf8");
      assert.equal(r.body, JSON.stringify(redactBody(JSON.parse(original), p)));
      const facts = factsOfJson(JSON.parse(original), p);
      assert.deepEqual([r.masked_ip, r.masked_device_id], [facts.maskedIp, facts.maskedDeviceId]);
      if (r.body.includes("hmac:")) redacted++;
    }
    assert.ok(redacted > 0, "some kept bodies hold pseudonyms");

    // Nothing under the old key anywhere; the old key retired and destroyed; the rotation's tables empty.
    const left = [...(await writtenPseudonyms())].filter((x) => before.old.has(x));
    assert.deepEqual(left, []);
    const k = await fx.db.pool.query<{ version: number; state: string; destroyed: boolean }>(
      "SELECT version, state, wrapped IS NULL AS destroyed FROM masq.pseudonym_keys WHERE version = $1",
      [before.oldVersion],
    );
    assert.deepEqual(k.rows, [{ version: before.oldVersion, state: "retired", destroyed: true }]);
    const rest = await fx.db.pool.query<{ n: number }>("SELECT (SELECT count(*) FROM masq.pseudonym_rotation) + (SELECT count(*) FROM masq.pseudonym_rotation_map) AS n");
    assert.equal(Number(rest.rows[0]!.n), 0);
  }

  async function before() {
    const { version } = await activeKey();
    const vault = await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.vault");
    return { groups: await groups(), old: await writtenPseudonyms(), vaultSize: vault.rows[0]!.n, oldVersion: version };
  }

  const options = (extra: Partial<RotatePseudonymKeyOptions> = {}): RotatePseudonymKeyOptions => ({
    pool: fx.db.pool,
    provider: provider(),
    table: TABLE,
    batchSize: 100,
    resume: false,
    ...extra,
  });

  test("a rotation replaces every pseudonym, keeps the duplicate groups and round trips exactly", async () => {
    const events = await seed(2000, 61);
    const b = await before();
    const phases: RotationPhase[] = [];
    const r = await rotatePseudonymKey(options({ onPhase: (p) => phases.push(p) }));
    assert.equal(r.outcome, "finished");
    assert.deepEqual(phases, ["vault", "quarantine", "table"]);
    if (r.outcome === "finished") {
      assert.equal(r.state.vaultDone, b.vaultSize);
      assert.equal(r.state.tableRowsDone, expectedCounts(events).valid - 1);
      assert.equal(r.state.unmapped, 0);
    }
    await assertRotated(events, b);
    // Ingestion after the rotation writes under the new key.
    const more = uniqueEvents(300, 61).map((e) => ({ ...e, body: e.body.replace(/"user_id":"u-(\d+)"/, '"user_id":"again-$1"') }));
    await ingest(more);
    const { p } = await activeKey();
    const again = await fx.db.pool.query<{ user_id: string; masked_ip: string }>("SELECT user_id, masked_ip FROM public.user_logins WHERE user_id LIKE 'again-%'");
    const orig = originals(more);
    assert.ok(again.rows.length > 200);
    for (const row of again.rows) assert.equal(row.masked_ip, p.pseudonymize("ip", orig.get(row.user_id)!.ip));
  });

  test("a rotation stopped in each pass and resumed ends in the same state as one that ran through", async () => {
    const events = await seed(2000, 62);
    const b = await before();
    assert.equal((await rotatePseudonymKey(options({ resume: true }))).outcome, "nothing to resume");

    const stopIn = async (phase: RotationPhase, resume: boolean, batchSize = 100, table = TABLE) => {
      const abort = new AbortController();
      let batches = 0;
      const r = await rotatePseudonymKey(
        options({
          resume,
          batchSize,
          table,
          signal: abort.signal,
          // The first report of a pass is its start; stop after two committed batches.
          onBatch: (p) => p === phase && ++batches > 2 && abort.abort(),
        }),
      );
      assert.equal(r.outcome, "stopped");
      if (r.outcome === "stopped") assert.equal(r.state.phase, phase);
    };
    await stopIn("vault", false);
    const versions = await fx.db.pool.query<{ key_version: number }>("SELECT DISTINCT key_version FROM masq.vault ORDER BY 1");
    assert.deepEqual(
      versions.rows.map((r) => r.key_version),
      [b.oldVersion, b.oldVersion + 1],
      "stopped half-way: values under both keys",
    );
    // A rotation in progress is continued only on request; a resume goes on with the tables it recorded, whatever
    // --table names (here a table that does not exist).
    await assert.rejects(rotatePseudonymKey(options()), (err: Error) => err instanceof ConfigError && /--resume/.test(err.message));

    await stopIn("quarantine", true, 20, { schema: "public", name: "other" });
    await stopIn("table", true);
    const mid = await fx.db.pool.query<{ table_block_done: string; table_blocks: string }>("SELECT table_block_done, table_blocks FROM masq.pseudonym_rotation");
    assert.ok(Number(mid.rows[0]!.table_block_done) > 0 && Number(mid.rows[0]!.table_block_done) < Number(mid.rows[0]!.table_blocks));

    const r = await rotatePseudonymKey(options({ resume: true }));
    assert.equal(r.outcome, "finished");
    if (r.outcome === "finished") {
      assert.equal(r.state.vaultDone, b.vaultSize, "each value moved once");
      assert.equal(r.state.tableRowsDone, expectedCounts(events).valid - 1, "each row rewritten once");
    }
    await assertRotated(events, b);
  });

  test("masq rotate pseudonym-key killed with SIGKILL mid-way: --resume finishes it", async () => {
    const events = await seed(1500, 63);
    const b = await before();
    const env = masqEnv({ queueUrl: "http://127.0.0.1:1/000000000000/unused", sqsEndpoint: "", databaseUrl: fx.pgdb.url });
    delete env.MASQ_PSEUDONYM_KEY;

    // A vault row half-way is locked: the rotation's batch that reaches it waits there, and is killed waiting.
    const holder = new pg.Client({ connectionString: fx.pgdb.url });
    await holder.connect();
    try {
      await holder.query("BEGIN");
      // (Found first, then locked alone: FOR UPDATE with OFFSET would lock the skipped rows too.)
      await holder.query(
        `SELECT 1 FROM masq.vault WHERE (kind, pseudonym) =
           (SELECT kind, pseudonym FROM masq.vault WHERE key_version = $1 ORDER BY kind, pseudonym OFFSET 400 LIMIT 1) FOR UPDATE`,
        [b.oldVersion],
      );
      const proc = spawnMasq(["rotate", "pseudonym-key", "--batch-size", "50"], env);
      await waitFor(
        async () =>
          (
            await fx.db.pool.query<{ n: number }>(
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'masq' AND wait_event_type = 'Lock'",
            )
          ).rows[0]!.n > 0,
        30_000,
        "the rotation to wait on the locked row",
      );
      proc.child.kill("SIGKILL");
      assert.equal((await proc.exited).signal, "SIGKILL");
      assert.ok(proc.lines.some((l) => /switched from pseudonym key version/.test(l)), proc.lines.join("\n"));
    } finally {
      await holder.query("ROLLBACK");
      await holder.end();
    }
    // The killed process's sessions end (and free the rotation lock) once Postgres notices.
    await waitFor(
      async () => (await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory'")).rows[0]!.n === 0,
      30_000,
      "the rotation lock to be released",
    );
    const state = await fx.db.pool.query<{ phase: string; vault_done: string }>("SELECT phase, vault_done FROM masq.pseudonym_rotation");
    assert.equal(state.rows[0]!.phase, "vault");
    assert.ok(Number(state.rows[0]!.vault_done) >= 400 && Number(state.rows[0]!.vault_done) < b.vaultSize, `${state.rows[0]!.vault_done} of ${b.vaultSize}`);

    const refused = spawnMasq(["rotate", "pseudonym-key"], env);
    assert.equal((await refused.exited).code, 2, refused.lines.join("\n"));
    assert.ok(refused.lines.some((l) => /--resume/.test(l)));

    const resumed = spawnMasq(["rotate", "pseudonym-key", "--resume", "--batch-size", "50"], env);
    assert.equal((await resumed.exited).code, 0, resumed.lines.join("\n"));
    assert.ok(resumed.lines.some((l) => /^resuming the rotation from version \d+ to \d+ \(vault pass\)/.test(l)), resumed.lines.join("\n"));
    assert.ok(resumed.lines.some((l) => /^finished: pseudonym key version \d+ retired/.test(l)), resumed.lines.join("\n"));
    await assertRotated(events, b);
  });

  for (const threads of [0, 1]) {
    test(`while ingestion keeps running (${threads === 0 ? "preparing on the main thread" : "with a prepare thread"}): every row ends under the new key, each message exactly once`, async () => {
      const first = await seed(1500, 64);
      const { version: oldVersion } = await activeKey();
      const old = await writtenPseudonyms();
      const during = uniqueEvents(1500, 65).map((e) => ({ ...e, body: e.body.replace(/"user_id":"u-(\d+)"/, '"user_id":"during-$1"') }));
      const afterwards = uniqueEvents(500, 66).map((e) => ({ ...e, body: e.body.replace(/"user_id":"u-(\d+)"/, '"user_id":"after-$1"') }));
      const all = [...first, ...during, ...afterwards];

      const queueUrl = fx.sqs.newQueue();
      const keys = await testKeys(fx.db, { pseudonymKey: null });
      const preparer = threads > 0 ? new PrepareThreads({ count: threads, logger: createLogger("silent") }) : undefined;
      const runner = await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl, keys, config: { batchSize: 50, batchWaitMs: 20 }, preparer });
      const running = runner.run();
      const count = async (like: string) =>
        (await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM public.user_logins WHERE user_id LIKE $1", [like])).rows[0]!.n;
      const send = (events: readonly SyntheticEvent[]) =>
        sendBodies(
          fx.sqs.client,
          queueUrl,
          events.map((e) => e.body),
        );
      const holder = new pg.Client({ connectionString: fx.pgdb.url });
      await holder.connect();
      try {
        // Ingestion is under way (under the old key) when the rotation starts.
        await send(during.slice(0, 750));
        await waitFor(async () => (await count("during-%")) >= 300, 60_000, "ingestion under the old key");

        // One old row is locked, so the table pass stops there; meanwhile ingestion must go on, under the new key.
        await holder.query("BEGIN");
        await holder.query(
          `SELECT 1 FROM public.user_logins WHERE ctid = (SELECT ctid FROM public.user_logins WHERE user_id LIKE 'u-%' ORDER BY ctid OFFSET 700 LIMIT 1) FOR UPDATE`,
        );
        let atSwitch = -1;
        const rotation = rotatePseudonymKey(
          options({
            batchSize: 50,
            onSwitched: () => void count("during-%").then((n) => (atSwitch = n)),
          }),
        );
        await waitFor(
          async () =>
            (
              await fx.db.pool.query<{ phase: string | null }>(
                "SELECT (SELECT phase FROM masq.pseudonym_rotation) AS phase WHERE EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock')",
              )
            ).rows[0]?.phase === "table",
          60_000,
          "the table pass to wait on the locked row",
        );
        await send(during.slice(750));
        const duringValid = expectedCounts(during).valid;
        await waitFor(async () => (await count("during-%")) === duringValid, 60_000, "ingestion while the rotation runs");
        assert.ok(atSwitch >= 300 && atSwitch < duringValid, `${atSwitch} rows of the second set were in before the switch`);
        await holder.query("ROLLBACK");
        const r = await rotation;
        assert.equal(r.outcome, "finished");

        await send(afterwards);
        const want = expectedCounts(all);
        await waitFor(
          async () => (await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.ingest_ledger")).rows[0]!.n === all.length,
          120_000,
          "every message committed",
        );
        const c = await fx.db.pool.query<{ rows: number; users: number }>("SELECT count(*)::int AS rows, count(DISTINCT user_id)::int AS users FROM public.user_logins");
        // One valid message of the first set was refused by the table (db_rejected).
        assert.deepEqual(c.rows[0], { rows: want.valid - 1, users: want.valid - 1 });
      } finally {
        await holder.end();
        runner.stop();
        await running;
        await preparer?.close();
        keys.close();
      }

      const { version, p } = await activeKey();
      assert.equal(version, oldVersion + 1);
      await assertRowsUnder(p, all);
      const orig = originals(all);
      const vault = await decryptVault(fx.db.pool, provider());
      for (const v of vault) {
        assert.equal(v.keyVersion, version);
        assert.equal(p.pseudonymize(v.kind, v.value), v.pseudonym);
      }
      const distinct = new Set([...orig.values()].flatMap((o) => [`ip ${o.ip}`, `device_id ${o.deviceId}`]));
      assert.equal(vault.length, distinct.size, "each value once in the vault");
      assert.deepEqual([...(await writtenPseudonyms())].filter((x) => old.has(x)), []);
    });
  }

  test("a pseudonym key given in MASQ_PSEUDONYM_KEY is not rotated: masq does not keep it", async () => {
    const other = await createTestDatabase();
    const db = createDb({ databaseUrl: other.url });
    try {
      await prepareDatabase(db, TABLE, { migrate: true, logger: createLogger("silent") });
      (await testKeys(db)).close();
      await assert.rejects(
        rotatePseudonymKey({ pool: db.pool, provider: provider(), table: TABLE, batchSize: 100, resume: false }),
        (err: Error) => err instanceof ConfigError && err.setting === "MASQ_PSEUDONYM_KEY" && /can rotate only a pseudonym key it manages/.test(err.message),
      );
      const k = await db.pool.query<{ state: string }>("SELECT state FROM masq.pseudonym_keys");
      assert.deepEqual(k.rows, [{ state: "active" }]);
    } finally {
      await db.close();
      await other.close();
    }
    // Set in the environment of the command, it is refused before anything is read, naming the setting only.
    const r = spawnSync(process.execPath, [fileURLToPath(new URL("../../bin/masq", import.meta.url)), "rotate", "pseudonym-key"], {
      env: { MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_PSEUDONYM_KEY: Buffer.from(TEST_KEY).toString("hex"), DATABASE_URL: fx.pgdb.url },
      encoding: "utf8",
    });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^masq: invalid setting \(MASQ_PSEUDONYM_KEY\): is set/);
    assert.ok(!r.stderr.includes(Buffer.from(TEST_KEY).toString("hex")));
  });

  test("a partitioned target table is refused before the switch: its blocks cannot be walked, so nothing starts", async () => {
    const part = { schema: "public", name: "user_logins_by_month" };
    await fx.db.pool.query(`CREATE TABLE public.user_logins_by_month (LIKE public.user_logins) PARTITION BY RANGE (create_date)`);
    try {
      const before = await fx.db.pool.query("SELECT version, state FROM masq.pseudonym_keys ORDER BY version");
      await assert.rejects(
        rotatePseudonymKey({ pool: fx.db.pool, provider: provider(), table: part, batchSize: 100, resume: false }),
        (err: Error) => err instanceof ConfigError && err.setting === "--table" && /is a partitioned table.*nothing was started/.test(err.message),
      );
      assert.deepEqual((await fx.db.pool.query("SELECT version, state FROM masq.pseudonym_keys ORDER BY version")).rows, before.rows);
      assert.equal((await fx.db.pool.query("SELECT 1 FROM masq.pseudonym_rotation")).rowCount, 0);
    } finally {
      await fx.db.pool.query("DROP TABLE public.user_logins_by_month");
    }
  });

  test("a rotation rewrites every registered table, retires the old key only after the last, and resumes between tables (issue 17)", async (t) => {
    await fx.reset();
    t.after(async () => {
      await fx.db.pool.query("DELETE FROM masq.target_tables WHERE relation = 'public.logins_eu'::regclass");
      await fx.db.pool.query("DROP TABLE public.logins_eu");
    });
    const env = { DATABASE_URL: fx.pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_LOG_LEVEL: "silent" };
    const migrated = await runMasq(["migrate", "--table", "logins_eu"], env);
    assert.equal(migrated.code, 0, migrated.stderr);
    const eu = { schema: "public", name: "logins_eu" };
    const login = (user: string, ip: string, device: string) => JSON.stringify({ user_id: user, app_version: "2.3.0", device_type: "ios", ip, locale: "en", device_id: device });
    // The same ip (and one device) in both tables: one vault value that rows of both use.
    const sent: Record<string, { table: string; user: string; ip: string; device: string }[]> = {
      "public.user_logins": [
        { table: "public.user_logins", user: "us-1", ip: "198.51.100.40", device: "dev-shared" },
        { table: "public.user_logins", user: "us-2", ip: "198.51.100.41", device: "dev-us-2" },
      ],
      "public.logins_eu": [
        { table: "public.logins_eu", user: "eu-1", ip: "198.51.100.40", device: "dev-shared" },
        { table: "public.logins_eu", user: "eu-2", ip: "198.51.100.40", device: "dev-eu-2" },
        { table: "public.logins_eu", user: "eu-3", ip: "198.51.100.42", device: "dev-eu-3" },
      ],
    };
    const keys = await testKeys(fx.db, { pseudonymKey: null });
    try {
      const at = new Date();
      for (const [table, rows] of Object.entries(sent)) {
        const target = table === "public.logins_eu" ? eu : TABLE;
        const messages = rows.map((r) => ({ messageId: `m-${r.user}`, body: login(r.user, r.ip, r.device), sentAt: at, receivedAt: at }));
        assert.equal((await commitMessages(fx.db.pool, target, keys, messages)).written, rows.length);
      }
    } finally {
      keys.close();
    }
    const oldVersion = (await activeKey()).version;

    // Stopped once the first table is done: the second is still under the old key, and the old key is not retired.
    const abort = new AbortController();
    const tables: string[] = [];
    const stopped = await rotatePseudonymKey(
      options({ signal: abort.signal, onTable: (t) => tables.push(t), onBatch: (phase, done, total) => phase === "table" && total > 0 && done === total && abort.abort() }),
    );
    assert.equal(stopped.outcome, "stopped");
    assert.deepEqual(tables, ["public.user_logins"]);
    const mid = await fx.db.pool.query<{ target_table: string; tables_done: string[] }>("SELECT target_table, tables_done FROM masq.pseudonym_rotation");
    assert.deepEqual(mid.rows, [{ target_table: "public.logins_eu", tables_done: ["public.user_logins"] }]);
    const old = (await pseudonymKeyVersion(fx.db.pool, provider(), oldVersion)).pseudonymizer;
    const euMid = await fx.db.pool.query<{ masked_ip: string }>("SELECT masked_ip FROM public.logins_eu WHERE user_id = 'eu-1'");
    assert.equal(euMid.rows[0]!.masked_ip, old.pseudonymize("ip", "198.51.100.40"), "the second table is not rewritten yet");
    const retiring = await fx.db.pool.query("SELECT state, wrapped IS NULL AS destroyed FROM masq.pseudonym_keys WHERE version = $1", [oldVersion]);
    assert.deepEqual(retiring.rows, [{ state: "retiring", destroyed: false }], "the old key outlives the first table");

    const r = await rotatePseudonymKey(options({ resume: true, onTable: (t) => tables.push(t) }));
    assert.equal(r.outcome, "finished");
    assert.deepEqual(tables, ["public.user_logins", "public.logins_eu"]);
    if (r.outcome === "finished") {
      assert.deepEqual(r.state.tablesDone, ["public.user_logins", "public.logins_eu"]);
      assert.equal(r.state.tableRowsDone, 5, "each row of both tables rewritten once");
    }
    const { version, p } = await activeKey();
    assert.equal(version, oldVersion + 1);
    for (const [table, rows] of Object.entries(sent)) {
      const got = await fx.db.pool.query<{ user_id: string; masked_ip: string; masked_device_id: string }>(`SELECT user_id, masked_ip, masked_device_id FROM ${table} ORDER BY user_id`);
      assert.equal(got.rows.length, rows.length);
      for (const row of got.rows) {
        const o = rows.find((x) => x.user === row.user_id)!;
        assert.equal(row.masked_ip, p.pseudonymize("ip", o.ip), `${table} ${row.user_id}: the new key's pseudonym`);
        assert.equal(row.masked_device_id, p.pseudonymize("device_id", o.device), `${table} ${row.user_id}: the new key's pseudonym`);
        for (const [pseudonym, value] of [
          [row.masked_ip, o.ip],
          [row.masked_device_id, o.device],
        ]) {
          const shown = await runMasq(["unmask", "--reason", "checking the rotation", "--pseudonym", pseudonym!], env);
          assert.equal(shown.code, 0, `${table} ${row.user_id}: ${shown.stderr}`);
          assert.ok(shown.stdout.includes(value!), `${table} ${row.user_id}: unmask finds ${value}`);
        }
      }
    }
    const k = await fx.db.pool.query("SELECT state, wrapped IS NULL AS destroyed FROM masq.pseudonym_keys WHERE version = $1", [oldVersion]);
    assert.deepEqual(k.rows, [{ state: "retired", destroyed: true }]);
    // The trail (its last three rows: this test's) names the tables: the switch those it will rewrite, the resume
    // those left, the end those done.
    const trail = await fx.db.pool.query<{ selector: Record<string, unknown> }>("SELECT selector FROM (SELECT seq, selector FROM masq.audit WHERE action = 'rotate-pseudonym-key' ORDER BY seq DESC LIMIT 3) t ORDER BY seq");
    assert.deepEqual(
      trail.rows.map((t) => [t.selector.event, t.selector.tables]),
      [
        ["switched", ["public.user_logins", "public.logins_eu"]],
        ["resumed", ["public.logins_eu"]],
        ["finished", ["public.user_logins", "public.logins_eu"]],
      ],
    );
  });

  test("a rotation in progress on a database at legacy migration 014 resumes after the upgrade and rewrites every registered table", async () => {
    const pgdb = await createTestDatabase();
    const db = createDb({ databaseUrl: pgdb.url });
    try {
      await migrate(db.pool, loadMigrations(LEGACY_MIGRATIONS_DIR).filter((m) => m.version <= 14));
      await legacyLedgerTakesTodaysClaims(db.pool);
      const eu = { schema: "public", name: "logins_eu" };
      for (const t of [TABLE, eu]) {
        await ensureTargetTable(db.pool, t);
        await db.pool.query("INSERT INTO masq.target_tables (relation) VALUES ($1::text::regclass)", [`${t.schema}.${t.name}`]);
      }
      const login = (user: string, ip: string) => JSON.stringify({ user_id: user, app_version: "2.3.0", device_type: "ios", ip, locale: "en", device_id: `dev-${user}` });
      const keys = await testKeys(db, { pseudonymKey: null });
      try {
        const at = new Date();
        const messages = (prefix: string) => Array.from({ length: 30 }, (_, i) => ({ messageId: `${prefix}-${i}`, body: login(`${prefix}-${i}`, `198.18.20.${i}`), sentAt: at, receivedAt: at }));
        assert.equal((await commitMessages(db.pool, TABLE, keys, messages("us"))).written, 30);
        assert.equal((await commitMessages(db.pool, eu, keys, messages("eu"))).written, 30);
      } finally {
        keys.close();
      }
      // Switched and stopped in the vault pass before the upgrade: the row an earlier masq left, without tables_done.
      const abort = new AbortController();
      const opts = { pool: db.pool, provider: provider(), table: TABLE, batchSize: 10, signal: abort.signal, onBatch: (_p: RotationPhase, done: number) => done > 0 && abort.abort() };
      assert.equal((await rotatePseudonymKey({ ...opts, resume: false })).outcome, "stopped");
      const m = await migrate(db.pool);
      assert.ok(m.applied.includes("legacy/015_rotation_over_every_table"), m.applied.join(", "));
      const state = await db.pool.query("SELECT phase, target_table, tables_done FROM masq.pseudonym_rotation");
      assert.deepEqual(state.rows, [{ phase: "vault", target_table: "public.user_logins", tables_done: [] }]);

      const r = await rotatePseudonymKey({ pool: db.pool, provider: provider(), table: TABLE, batchSize: 10, resume: true });
      assert.equal(r.outcome, "finished");
      if (r.outcome === "finished") assert.deepEqual([r.state.tablesDone, r.state.tableRowsDone], [["public.user_logins", "public.logins_eu"], 60]);
      const { rows } = await db.pool.query<{ version: number }>("SELECT version FROM masq.pseudonym_keys WHERE state = 'active'");
      const p = (await pseudonymKeyVersion(db.pool, provider(), rows[0]!.version)).pseudonymizer;
      for (const t of ["public.user_logins", "public.logins_eu"]) {
        const got = await db.pool.query<{ user_id: string; masked_ip: string }>(`SELECT user_id, masked_ip FROM ${t}`);
        assert.equal(got.rows.length, 30);
        for (const row of got.rows) assert.equal(row.masked_ip, p.pseudonymize("ip", `198.18.20.${row.user_id.split("-")[1]}`), `${t} ${row.user_id}`);
      }
    } finally {
      await db.close();
      await pgdb.close();
    }
  });

  test("a running masq run says in its log and its metrics when a rotation switches it to the new pseudonym key", async () => {
    const events = await seed(200, 68);
    const { version: oldVersion } = await activeKey();
    const queueUrl = fx.sqs.newQueue();
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { MASQ_WAIT_TIME_SECONDS: "1" } });
    delete env.MASQ_PSEUDONYM_KEY;
    const proc = spawnMasq(["run"], env);
    const ledger = async () => (await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.ingest_ledger")).rows[0]!.n;
    const later = uniqueEvents(40, 69).map((e) => e.body.replace(/"user_id":"u-(\d+)"/, '"user_id":"later-$1"'));
    try {
      const port = () => {
        const l = proc.lines.find((x) => x.includes("HTTP listener"));
        return l === undefined ? undefined : (JSON.parse(l) as { port: number }).port;
      };
      await waitFor(() => port() !== undefined && proc.lines.some((l) => l.includes('"keys loaded"')), 30_000, "the HTTP listener and the keys");
      const versionMetric = async () => /^masq_pseudonym_key_version (\d+)$/m.exec(await (await fetch(`http://127.0.0.1:${port()}/metrics`)).text())?.[1];
      assert.equal(await versionMetric(), String(oldVersion));
      assert.equal((await rotatePseudonymKey(options({ batchSize: 100 }))).outcome, "finished");
      await sendBodies(fx.sqs.client, queueUrl, later);
      await waitFor(async () => (await ledger()) === events.length + later.length, 60_000, "the messages sent after the switch");
      const switched = proc.lines.filter((l) => l.includes("switched to pseudonym key"));
      assert.equal(switched.length, 1, proc.lines.join("\n"));
      const line = JSON.parse(switched[0]!) as { level: string; msg: string; pseudonymKeyVersion: number; previousVersion: number };
      assert.deepEqual([line.level, line.pseudonymKeyVersion, line.previousVersion], ["info", oldVersion + 1, oldVersion]);
      // Versions only: neither key material nor a fingerprint (hex of 16 digits or more) anywhere in the log.
      assert.ok(!proc.lines.some((l) => /[0-9a-f]{16,}/.test(l.replace(/"masterKey":"local:[0-9a-f]+"/, ""))), proc.lines.join("\n"));
      assert.equal(await versionMetric(), String(oldVersion + 1));
    } finally {
      proc.child.kill("SIGTERM");
      await proc.exited;
    }
  });

  // Last: it moves every key to another master key.
  test("master key rotation re-wraps every key, changes no ciphertext, and scripts/rotate-keys runs both rotations", async () => {
    const events = await seed(800, 67);
    const newMaster = new Uint8Array(32).map((_, i) => 0x60 + i);
    const newHex = Buffer.from(newMaster).toString("hex");
    const env = (extra: Record<string, string>) => {
      const e = masqEnv({ queueUrl: "http://127.0.0.1:1/000000000000/unused", sqsEndpoint: "", databaseUrl: fx.pgdb.url, extra });
      delete e.MASQ_PSEUDONYM_KEY;
      return e;
    };
    const keysUnder = async () =>
      (
        await fx.db.pool.query<{ master_key_id: string; n: number }>(
          `SELECT master_key_id, count(*)::int AS n FROM (SELECT master_key_id FROM masq.data_keys
           UNION ALL SELECT master_key_id FROM masq.pseudonym_keys WHERE state <> 'retired') k GROUP BY 1 ORDER BY 1`,
        )
      ).rows;
    const stored = (await keysUnder()).reduce((a, r) => a + r.n, 0);
    const bytes = await vaultBytes(fx.db.pool);

    // Without the old key in MASQ_MASTER_KEY_PREVIOUS, nothing can be re-wrapped: the setting is named.
    const missing = spawnMasq(["rotate", "master-key"], env({ MASQ_MASTER_KEY: newHex }));
    assert.equal((await missing.exited).code, 2, missing.lines.join("\n"));
    assert.ok(missing.lines.some((l) => /MASQ_MASTER_KEY_PREVIOUS/.test(l)));
    // A dry run checks what the run checks: the same exit and line, and nothing changed.
    const missingDry = spawnMasq(["rotate", "master-key", "--dry-run"], env({ MASQ_MASTER_KEY: newHex }));
    assert.equal((await missingDry.exited).code, 2, missingDry.lines.join("\n"));
    assert.ok(missingDry.lines.some((l) => /MASQ_MASTER_KEY_PREVIOUS/.test(l)), missingDry.lines.join("\n"));
    assert.deepEqual(await keysUnder(), [{ master_key_id: localMasterKeyId(TEST_MASTER_KEY), n: stored }]);
    // The operators' script gives each step only the flags it takes (--table is pseudonym-key's), and refuses an
    // unknown flag before either step runs.
    const script = fileURLToPath(new URL("../../scripts/rotate-keys", import.meta.url));
    const bothDry = spawnSync(script, ["--dry-run", "--table", "user_logins"], { cwd: "/", env: env({ MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX }), encoding: "utf8" });
    assert.equal(bothDry.status, 0, `${bothDry.stdout}\n${bothDry.stderr}`);
    assert.match(bothDry.stdout, /^every key is under local:\S+ already: nothing to re-wrap$/m);
    assert.match(bothDry.stdout, /^would rotate pseudonym key version \d+ to \d+: .* public\.user_logins \(/m);
    const unknown = spawnSync(script, ["--dry-run", "--tabel", "user_logins"], { cwd: "/", env: env({ MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX }), encoding: "utf8" });
    assert.equal(unknown.status, 2, `${unknown.stdout}\n${unknown.stderr}`);
    assert.equal(unknown.stderr, "scripts/rotate-keys: unknown option '--tabel'; nothing was rotated (see --help)\n");

    const dry = spawnMasq(["rotate", "master-key", "--dry-run"], env({ MASQ_MASTER_KEY: newHex, MASQ_MASTER_KEY_PREVIOUS: TEST_MASTER_KEY_HEX }));
    assert.equal((await dry.exited).code, 0, dry.lines.join("\n"));
    assert.ok(dry.lines.some((l) => l.startsWith(`would re-wrap ${stored - 1} data key(s) and 1 pseudonym key(s) (and the audit key) under ${localMasterKeyId(newMaster)}`)), dry.lines.join("\n"));
    assert.deepEqual(await keysUnder(), [{ master_key_id: localMasterKeyId(TEST_MASTER_KEY), n: stored }]);

    const run = spawnMasq(["rotate", "master-key", "--batch-size", "2"], env({ MASQ_MASTER_KEY: newHex, MASQ_MASTER_KEY_PREVIOUS: TEST_MASTER_KEY_HEX }));
    assert.equal((await run.exited).code, 0, run.lines.join("\n"));
    assert.deepEqual(await keysUnder(), [{ master_key_id: localMasterKeyId(newMaster), n: stored }]);
    assert.deepEqual(await vaultBytes(fx.db.pool), bytes, "no vault ciphertext changed");
    const stamped = await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.data_keys WHERE rewrapped_at IS NULL");
    assert.equal(stamped.rows[0]!.n, 0);

    // The old master key is not needed any more: the vault opens with the new one alone.
    const vault = await decryptVault(fx.db.pool, new LocalKeyProvider(Uint8Array.from(newMaster)));
    const orig = originals(events);
    assert.deepEqual(new Set(vault.map((v) => `${v.kind} ${v.value}`)), new Set([...orig.values()].flatMap((o) => [`ip ${o.ip}`, `device_id ${o.deviceId}`])));

    // The operators' script, from another directory: nothing left to re-wrap, then a pseudonym key rotation.
    const r = spawnSync(script, ["--batch-size", "100"], { cwd: "/", env: env({ MASQ_MASTER_KEY: newHex }), encoding: "utf8" });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /nothing re-wrapped: every key was under local:/);
    assert.match(r.stdout, /^finished: pseudonym key version \d+ retired/m);
    const vaultAfter = await decryptVault(fx.db.pool, new LocalKeyProvider(Uint8Array.from(newMaster)));
    assert.equal(vaultAfter.length, vault.length);
  });
});
