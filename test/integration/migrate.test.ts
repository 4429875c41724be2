import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createLogger } from "../../src/log.ts";
import { prepareDatabase } from "../../src/commands/setup.ts";
import { FatalError } from "../../src/errors.ts";
import { migrate, loadMigrations } from "../../src/sink/migrate.ts";
import { ensureTargetTable } from "../../src/sink/target-table.ts";
import { createDb, type Db } from "../../src/sink/db.ts";
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
  const rows = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.schema_migrations");
  assert.equal(rows.rows[0]!.n, loadMigrations().length);
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
