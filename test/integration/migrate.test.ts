import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createLogger } from "../../src/log.ts";
import { prepareDatabase } from "../../src/db/prepare-database.ts";
import { FatalError } from "../../src/errors.ts";
import { LEGACY_MIGRATIONS_DIR, migrate, loadMigrations } from "../../src/db/migrate.ts";
import { ensureTargetTable } from "../../src/db/tables.ts";
import { createDb, type Db } from "../../src/db/pool.ts";
import { captureLogger } from "../helpers/pipeline.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";

let pgdb: TestDatabase;
let db: Db;

before(async () => {
  pgdb = await createTestDatabase();
  db = createDb({ databaseUrl: pgdb.url });
});
after(async () => {
  await db.close();
  await pgdb.close();
});

test("migrations apply once; running them again (even concurrently) is a no-op", async () => {
  const first = await migrate(db.pool);
  assert.deepEqual(first.applied, loadMigrations().map((m) => m.name));
  const again = await Promise.all([migrate(db.pool), migrate(db.pool), migrate(db.pool)]);
  for (const r of again) assert.deepEqual(r.applied, []);
  // The baseline's and, as history, the legacy ones' (an older masq finds all of its own and refuses the newer schema).
  assert.deepEqual(await recorded(db), [...loadMigrations(LEGACY_MIGRATIONS_DIR), ...loadMigrations()].map((m) => `${m.version} ${m.name}`));
});

const recorded = async (d: Db) => (await d.pool.query<{ r: string }>("SELECT version || ' ' || name AS r FROM masq.schema_migrations ORDER BY version")).rows.map((x) => x.r);

test("a database of the baseline's first numbering (001_keys_and_vault to 005_roles) is renumbered in place, its records only", async () => {
  // As that masq made them, whole or interrupted after its third migration (each ran in a transaction of its own).
  const firstNumbering = loadMigrations().map((m) => ({ ...m, version: m.version - 100, name: `0${m.name.slice(1)}` }));
  for (const upTo of [5, 3]) {
    const old = await createTestDatabase();
    const oldDb = createDb({ databaseUrl: old.url });
    try {
      await migrate(oldDb.pool, firstNumbering.filter((m) => m.version <= upTo));
      await oldDb.pool.query("UPDATE masq.schema_migrations SET applied_at = '2026-12-01T00:00:00Z'");
      const objects = async () => (await oldDb.pool.query<{ d: string }>("SELECT p.oid::regprocedure::text || md5(pg_get_functiondef(p.oid)) AS d FROM pg_proc p WHERE p.pronamespace = 'masq'::regnamespace ORDER BY 1")).rows;

      const m = await migrate(oldDb.pool);
      const renumbered = loadMigrations().filter((x) => x.version <= 100 + upTo).map((x) => `renumbered/${x.name}`);
      assert.deepEqual(m.applied, [...renumbered, ...loadMigrations().filter((x) => x.version > 100 + upTo).map((x) => x.name)]);
      assert.deepEqual(await recorded(oldDb), [...loadMigrations(LEGACY_MIGRATIONS_DIR), ...loadMigrations()].map((x) => `${x.version} ${x.name}`));
      // Renumbering changes nothing; the migrations after the first numbering's (106 on) then redefine functions as on
      // a new database.
      if (upTo === 5) {
        const fresh = await createTestDatabase();
        const freshDb = createDb({ databaseUrl: fresh.url });
        try {
          await migrate(freshDb.pool);
          const expected = (await freshDb.pool.query<{ d: string }>("SELECT p.oid::regprocedure::text || md5(pg_get_functiondef(p.oid)) AS d FROM pg_proc p WHERE p.pronamespace = 'masq'::regnamespace ORDER BY 1")).rows;
          assert.deepEqual(await objects(), expected, "the schema is a new database's");
        } finally {
          await freshDb.close();
          await fresh.close();
        }
      }
      // The history dates from the baseline's first migration, kept with its time.
      const dates = await oldDb.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.schema_migrations WHERE applied_at = '2026-12-01T00:00:00Z'");
      assert.equal(dates.rows[0]!.n, 18 + upTo);
      assert.deepEqual((await migrate(oldDb.pool)).applied, []);
    } finally {
      await oldDb.close();
      await old.close();
    }
  }
});

test("a database migrated by a newer masq is refused with a clear message", async () => {
  await migrate(db.pool);
  await db.pool.query("INSERT INTO masq.schema_migrations (version, name) VALUES (999, '999_from_the_future')");
  try {
    await assert.rejects(migrate(db.pool), (err: unknown) => err instanceof FatalError && /newer than this masq/.test(err.message));
  } finally {
    await db.pool.query("DELETE FROM masq.schema_migrations WHERE version = 999");
  }
});

test("a database that records migrations this masq knows neither as its own nor as legacy ones is refused, and left as it was", async () => {
  const other = await createTestDatabase();
  const otherDb = createDb({ databaseUrl: other.url });
  try {
    await otherDb.pool.query("CREATE SCHEMA masq; CREATE TABLE masq.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())");
    await otherDb.pool.query("INSERT INTO masq.schema_migrations (version, name) VALUES (1, '001_keys_and_vault'), (2, '002_from_a_fork')");
    await assert.rejects(migrate(otherDb.pool), (err: unknown) => err instanceof FatalError && /does not know \(001_keys_and_vault, 002_from_a_fork\)/.test(err.message));
    const tables = await otherDb.pool.query("SELECT 1 FROM pg_tables WHERE schemaname = 'masq' AND tablename <> 'schema_migrations'");
    assert.equal(tables.rowCount, 0);
  } finally {
    await otherDb.close();
    await other.close();
  }
});

test("an existing user_logins created by someone else is used as is; a table missing a column is refused", async () => {
  await db.pool.query("CREATE SCHEMA analytics");
  await db.pool.query(`CREATE TABLE analytics.user_logins(
      user_id varchar(128), device_type varchar(32), masked_ip varchar(256), masked_device_id varchar(256),
      locale varchar(32), app_version integer, create_date date, extra_column text DEFAULT 'kept')`);
  const r = await ensureTargetTable(db.pool, { schema: "analytics", name: "user_logins" });
  assert.equal(r.created, false);

  await db.pool.query("CREATE TABLE analytics.wrong(user_id text)");
  await assert.rejects(ensureTargetTable(db.pool, { schema: "analytics", name: "wrong" }), /has no column device_type/);
  await assert.rejects(ensureTargetTable(db.pool, { schema: "nope", name: "user_logins" }), /schema "nope"/);
});

test("prepareDatabase creates the target table with the given DDL when absent", async () => {
  await prepareDatabase(db, { schema: "public", name: "user_logins" }, { migrate: true, logger: createLogger("silent") });
  const cols = await db.pool.query<{ column_name: string; data_type: string; character_maximum_length: number | null }>(
    "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'user_logins' ORDER BY ordinal_position",
  );
  assert.deepEqual(
    cols.rows.map((c) => `${c.column_name} ${c.data_type}${c.character_maximum_length ? `(${c.character_maximum_length})` : ""}`),
    [
      "user_id character varying(128)",
      "device_type character varying(32)",
      "masked_ip character varying(256)",
      "masked_device_id character varying(256)",
      "locale character varying(32)",
      "app_version integer",
      "create_date date",
    ],
  );
});

test("legacy migration 011 upgrades a populated database of legacy migration 010: its quarantine records are attributed", async () => {
  const old = await createTestDatabase();
  const oldDb = createDb({ databaseUrl: old.url });
  try {
    await migrate(oldDb.pool, loadMigrations(LEGACY_MIGRATIONS_DIR).filter((m) => m.version <= 10));
    await ensureTargetTable(oldDb.pool, { schema: "public", name: "user_logins" });
    const ip = "a".repeat(64);
    const dev = "b".repeat(64);
    // As c75110e wrote them: the redacted copy (user_id was computed from it by masq.redacted_user_id).
    const records: [string, string, string | null, boolean][] = [
      ["plain", "missing_field", `{"user_id":"old-1","ip":"hmac:${ip}","device_id":"hmac:${dev}"}`, false],
      ["nul", "invalid_text", `{"user_id":"old-2","app_version":"1.0","device_type":"ios","ip":"hmac:${ip}","device_id":"hmac:${dev}","locale":"\\u0000"}`, false],
      ["surrogate", "invalid_text", `{"user_id":"old-3","app_version":"\\udc00","ip":"hmac:${ip}","device_id":"hmac:${dev}"}`, false],
      ["rejected", "db_rejected", `{"userId":"old-4","deviceType":"ios","maskedIp":"${ip}","maskedDeviceId":"${dev}","locale":null,"appVersion":1000000,"createDate":"2026-12-01"}`, false],
      ["not-json", "invalid_json", null, true],
    ];
    for (const [id, reason, body, original] of records) {
      await oldDb.pool.query(
        "INSERT INTO masq.quarantine (message_id, reason, detail, body, body_length, received_at, body_nonce, body_ciphertext) VALUES ($1, $2, 'd', $3, 10, now(), $4, $5)",
        [id, reason, body, original ? Buffer.alloc(12) : null, original ? Buffer.from("sealed") : null],
      );
    }
    const attributed = async () =>
      (await oldDb.pool.query<{ message_id: string; user_id: string | null }>("SELECT message_id, user_id FROM masq.quarantine ORDER BY message_id")).rows.map((r) => [r.message_id, r.user_id]);
    // Before: the copies jsonb cannot hold named nobody (issue 17, finding 1).
    assert.deepEqual(await attributed(), [["not-json", null], ["nul", null], ["plain", "old-1"], ["rejected", "old-4"], ["surrogate", null]]);

    const { logger, lines } = captureLogger("info");
    await prepareDatabase(oldDb, { schema: "public", name: "user_logins" }, { migrate: true, logger });
    assert.deepEqual(await attributed(), [["not-json", null], ["nul", "old-2"], ["plain", "old-1"], ["rejected", "old-4"], ["surrogate", "old-3"]]);
    const typed = await oldDb.pool.query<{ message_id: string; masked_ip: string | null; masked_device_id: string | null }>(
      "SELECT message_id, masked_ip, masked_device_id FROM masq.quarantine ORDER BY message_id",
    );
    for (const r of typed.rows) assert.deepEqual([r.masked_ip, r.masked_device_id], r.message_id === "not-json" ? [null, null] : [ip, dev], r.message_id);
    // The record it could not attribute is reported, once.
    assert.ok(lines.some((l) => /name no user/.test(l) && /"records":1/.test(l)), lines.join("\n"));
    // No SQL function parses the copy any more; ingestion writes the columns.
    const fns = await oldDb.pool.query("SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'masq' AND p.proname IN ('redacted_user_id', 'redacted_pseudonym')");
    assert.equal(fns.rowCount, 0);
    await oldDb.pool.query("UPDATE masq.quarantine SET user_id = 'x' WHERE message_id = 'not-json'");
  } finally {
    await oldDb.close();
    await old.close();
  }
});

test("legacy migration 016 upgrades a database of legacy migration 015 with an erasure in progress: it goes on, as an erasure of its table only", async () => {
  const old = await createTestDatabase();
  const oldDb = createDb({ databaseUrl: old.url });
  try {
    await migrate(oldDb.pool, loadMigrations(LEGACY_MIGRATIONS_DIR).filter((m) => m.version <= 15));
    await ensureTargetTable(oldDb.pool, { schema: "public", name: "user_logins" });
    await oldDb.pool.query("INSERT INTO masq.target_tables (relation) VALUES ('public.user_logins') ON CONFLICT DO NOTHING");
    // A vault-only erasure killed at 015 after its first batch.
    await oldDb.pool.query(`INSERT INTO masq.erasures (seq, login_role, target, user_id, vault_only, vault) VALUES (-1, current_user, 'public.user_logins', 'killed', true, 3)`);
    await prepareDatabase(oldDb, { schema: "public", name: "user_logins" }, { migrate: true, logger: captureLogger("info").logger });
    const kept = await oldDb.pool.query("SELECT seq::int, user_id, vault_only, vault::int, every_table FROM masq.erasures");
    assert.deepEqual(kept.rows, [{ seq: -1, user_id: "killed", vault_only: true, vault: 3, every_table: false }]);
    const epoch = async () => (await oldDb.pool.query<{ epoch: string }>("SELECT epoch::text AS epoch FROM masq.vault_epoch")).rows[0]!.epoch;
    const before = await epoch();
    const batch = await oldDb.pool.query("SELECT rows, quarantine, originals, vault, done FROM masq.erase_subject_batch(-1, 10)");
    assert.deepEqual(batch.rows, [{ rows: 0, quarantine: 0, originals: 0, vault: 0, done: true }]);
    assert.equal(await epoch(), before, "nothing left: the epoch was not taken");
  } finally {
    await oldDb.close();
    await old.close();
  }
});
