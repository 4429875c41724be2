import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { commitMessages } from "../../src/ingest/commit-batch.ts";
import { createDb } from "../../src/db/pool.ts";
import { LEGACY_MIGRATIONS_DIR, loadMigrations, migrate } from "../../src/db/migrate.ts";
import { createTestDatabase } from "../helpers/postgres.ts";
import { TABLE, TEST_MASTER_KEY_HEX, testKeys } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";

/**
 * The red team's escalation (issue 17, after legacy migration 015): whoever owns a registered table could become superuser
 * through an erasure, because masq deletes from it with the rights of schema masq's owner, and the table's triggers
 * run with those rights. Roles with random names, dropped at the end.
 */
describe("a registered table's own code never runs with the rights of schema masq's owner", () => {
  const fx = usePipelineFixture();
  const tag = randomBytes(4).toString("hex");
  const tabowner = `rt_tabowner_${tag}`;
  const eraser = `rt_eraser_${tag}`;
  const schema = `rt_app_${tag}`;
  const password = randomBytes(12).toString("hex");
  const url = (role: string) => {
    const u = new URL(fx.pgdb.url);
    u.username = role;
    u.password = password;
    return u.toString();
  };
  const env = (databaseUrl: string) => ({ DATABASE_URL: databaseUrl, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_LOG_LEVEL: "warn" });
  const asTabowner = async (sql: string) => {
    const c = new pg.Client({ connectionString: url(tabowner) });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  const isSuperuser = async () => (await fx.db.pool.query<{ s: boolean }>("SELECT rolsuper AS s FROM pg_roles WHERE rolname = $1", [tabowner])).rows[0]!.s;
  const registered = async (table: string) =>
    (await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.target_tables WHERE relation = to_regclass($1)", [table])).rows[0]!.n === 1;

  let masqOwner = "";

  before(async () => {
    masqOwner = (await fx.db.pool.query<{ o: string }>("SELECT nspowner::regrole::text AS o FROM pg_namespace WHERE nspname = 'masq'")).rows[0]!.o;
    assert.equal((await runMasq(["migrate"], env(fx.pgdb.url))).code, 0);
    await fx.db.pool.query(`CREATE ROLE ${tabowner} LOGIN PASSWORD '${password}'`);
    await fx.db.pool.query(`CREATE ROLE ${eraser} LOGIN PASSWORD '${password}'`);
    await fx.db.pool.query(`GRANT masq_erase TO ${eraser}`);
    await fx.db.pool.query(`GRANT CREATE ON DATABASE "${new URL(fx.pgdb.url).pathname.slice(1)}" TO ${tabowner}`);
    await asTabowner(`CREATE SCHEMA ${schema}; GRANT USAGE ON SCHEMA ${schema} TO PUBLIC`);
  });
  // The fixture's own after hook (registered first, run first) has dropped the test database by now; the roles are
  // the server's, so they are dropped from its maintenance database (an embedded server has gone, and them with it).
  after(async () => {
    const u = new URL(fx.pgdb.url);
    u.pathname = "/postgres";
    const admin = new pg.Client({ connectionString: u.toString() });
    try {
      await admin.connect();
      for (const r of [tabowner, eraser]) await admin.query(`DROP ROLE IF EXISTS ${r}`);
    } catch {
      // the server has stopped
    } finally {
      await admin.end().catch(() => undefined);
    }
  });

  test("the red team's reproduction: the table owner's BEFORE DELETE trigger does not make it superuser", async () => {
    await asTabowner(`
      CREATE TABLE ${schema}.logins (user_id varchar(128), device_type varchar(32), masked_ip varchar(256), masked_device_id varchar(256),
                                     locale varchar(32), app_version integer, create_date date);
      CREATE FUNCTION ${schema}.escalate() RETURNS trigger LANGUAGE plpgsql AS $f$
      BEGIN
          IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
              EXECUTE 'ALTER ROLE ${tabowner} SUPERUSER';
          END IF;
          RETURN OLD;
      END $f$;
      CREATE TRIGGER escalate BEFORE DELETE ON ${schema}.logins FOR EACH ROW EXECUTE FUNCTION ${schema}.escalate();
      INSERT INTO ${schema}.logins VALUES ('other', 'ios', 'a', 'b', 'US', 1, current_date);`);
    const m = await runMasq(["migrate", "--table", `${schema}.logins`], env(fx.pgdb.url));
    // A registration made before legacy migration 017 (its check bypassed): the erasure must refuse it all the same.
    if (!(await registered(`${schema}.logins`))) {
      await fx.db.pool.query(
        `BEGIN; SET LOCAL session_replication_role = replica; INSERT INTO masq.target_tables (relation) VALUES ('${schema}.logins'::regclass); COMMIT`,
      );
    }
    const e = await runMasq(["subject", "erase", "--user-id", "other", "--table", `${schema}.logins`, "--reason", "erasure request DSR-RT"], env(url(eraser)));
    assert.equal(await isSuperuser(), false, `${tabowner} became superuser through the erasure (migrate: ${m.code}, erase: ${e.code} ${e.stderr})`);
    assert.notEqual(e.code, 0, e.stdout);
    assert.equal(e.stderr.trim().split("\n").length, 1, e.stderr);
    assert.match(e.stderr, new RegExp(`table ${schema}\\.logins is owned by ${tabowner}, not by ${masqOwner}`));
    assert.equal((await fx.db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${schema}.logins`)).rows[0]!.n, 1);
    // Every registered table is read for the usage check: an erasure of another table refuses too, naming this one.
    const all = await runMasq(["subject", "erase", "--user-id", "other", "--reason", "erasure request DSR-RT"], env(url(eraser)));
    assert.notEqual(all.code, 0, all.stdout);
    assert.match(all.stderr, new RegExp(`table ${schema}\\.logins is owned by ${tabowner}`));
    assert.equal(await isSuperuser(), false);
    // The owner's migrate names it as a warning, and succeeds; once unregistered, erasures run again.
    const w = await runMasq(["migrate"], env(fx.pgdb.url));
    assert.equal(w.code, 0, w.stderr);
    assert.match(w.stdout + w.stderr, new RegExp(`registered before masq refused such tables: table ${schema}\\.logins is owned by ${tabowner}`));
    await fx.db.pool.query(`DELETE FROM masq.target_tables WHERE relation = '${schema}.logins'::regclass`);
    const ok = await runMasq(["subject", "erase", "--user-id", "other", "--reason", "erasure request DSR-RT"], env(url(eraser)));
    assert.equal(ok.code, 0, ok.stderr);
  });

  test("masq migrate --table refuses a table another role owns, and one with a trigger, a rule or row-level security, in one line", async () => {
    await fx.db.pool.query(`CREATE TABLE ${schema}.mine (user_id varchar(128), device_type varchar(32), masked_ip varchar(256), masked_device_id varchar(256),
                                                      locale varchar(32), app_version integer, create_date date)`);
    await fx.db.pool.query(`CREATE FUNCTION ${schema}.noop() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN RETURN OLD; END $f$`);
    const cases: [string, string, RegExp][] = [
      [`ALTER TABLE ${schema}.mine OWNER TO ${tabowner}`, `ALTER TABLE ${schema}.mine OWNER TO ${masqOwner}`, new RegExp(`is owned by ${tabowner}, not by ${masqOwner} .*ALTER TABLE ${schema}\\.mine OWNER TO ${masqOwner}`)],
      [`CREATE TRIGGER t1 BEFORE DELETE ON ${schema}.mine FOR EACH ROW EXECUTE FUNCTION ${schema}.noop()`, `DROP TRIGGER t1 ON ${schema}.mine`, /has triggers \(t1\)/],
      [`CREATE RULE r1 AS ON DELETE TO ${schema}.mine DO ALSO NOTIFY x`, `DROP RULE r1 ON ${schema}.mine`, /has rules \(r1\)/],
      [`ALTER TABLE ${schema}.mine ENABLE ROW LEVEL SECURITY`, `ALTER TABLE ${schema}.mine DISABLE ROW LEVEL SECURITY`, /has row-level security/],
      [`ALTER TABLE ${schema}.mine FORCE ROW LEVEL SECURITY`, `ALTER TABLE ${schema}.mine NO FORCE ROW LEVEL SECURITY`, /has row-level security/],
    ];
    for (const [make, undo, expected] of cases) {
      await fx.db.pool.query(make);
      const r = await runMasq(["migrate", "--table", `${schema}.mine`], env(fx.pgdb.url));
      assert.equal(r.code, 2, `${make}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^masq: .*table ${schema}\\.mine `), r.stderr);
      assert.match(r.stderr, expected);
      assert.equal(await registered(`${schema}.mine`), false, make);
      await assert.rejects(fx.db.pool.query(`INSERT INTO masq.target_tables (relation) VALUES ('${schema}.mine'::regclass)`), expected);
      await fx.db.pool.query(undo);
    }
    const r = await runMasq(["migrate", "--table", `${schema}.mine`], env(fx.pgdb.url));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await registered(`${schema}.mine`), true);
  });

  test("rotate pseudonym-key refuses a registered table another role owns, and a --table with a trigger, before it switches anything", async () => {
    // A pseudonym key masq manages (version 1), made by ingesting one login.
    const keys = await testKeys(fx.db, { pseudonymKey: null });
    try {
      const at = new Date();
      const body = JSON.stringify({ user_id: "u1", app_version: "1.0.0", device_type: "ios", ip: "198.18.0.1", locale: "en", device_id: "d1" });
      assert.equal((await commitMessages(fx.db.pool, TABLE, keys, [{ messageId: "m1", body, sentAt: at, receivedAt: at }])).written, 1);
    } finally {
      keys.close();
    }
    await asTabowner(`
      CREATE TABLE ${schema}.rotated (user_id varchar(128), device_type varchar(32), masked_ip varchar(256), masked_device_id varchar(256),
                                      locale varchar(32), app_version integer, create_date date);
      CREATE FUNCTION ${schema}.escalate_on_update() RETURNS trigger LANGUAGE plpgsql AS $f$
      BEGIN
          IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
              EXECUTE 'ALTER ROLE ${tabowner} SUPERUSER';
          END IF;
          RETURN NEW;
      END $f$;
      CREATE TRIGGER escalate BEFORE UPDATE ON ${schema}.rotated FOR EACH ROW EXECUTE FUNCTION ${schema}.escalate_on_update();`);
    await fx.db.pool.query(`INSERT INTO ${schema}.rotated SELECT * FROM public.user_logins`);
    const activeKey = async () => (await fx.db.pool.query<{ v: number }>("SELECT version AS v FROM masq.pseudonym_keys WHERE state = 'active'")).rows.map((r) => r.v);

    const named = await runMasq(["rotate", "pseudonym-key", "--table", `${schema}.rotated`], env(fx.pgdb.url));
    assert.equal(await isSuperuser(), false, `${tabowner} is superuser after rotating its table (${named.code} ${named.stderr})`);
    assert.equal(named.code, 2, named.stderr);
    assert.equal(named.stderr.trim().split("\n").length, 1, named.stderr);
    assert.match(named.stderr, new RegExp(`table ${schema}\\.rotated is owned by ${tabowner}.*nothing was started`));

    await fx.db.pool.query(`BEGIN; SET LOCAL session_replication_role = replica; INSERT INTO masq.target_tables (relation) VALUES ('${schema}.rotated'::regclass); COMMIT`);
    try {
      const all = await runMasq(["rotate", "pseudonym-key"], env(fx.pgdb.url));
      assert.equal(await isSuperuser(), false, `${tabowner} became superuser through the rotation (${all.code} ${all.stderr})`);
      assert.notEqual(all.code, 0, all.stdout);
      assert.equal(all.stderr.trim().split("\n").length, 1, all.stderr);
      assert.match(all.stderr, new RegExp(`table ${schema}\\.rotated is owned by ${tabowner}`));
      assert.deepEqual(await activeKey(), [1]);
      assert.equal((await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.pseudonym_rotation")).rows[0]!.n, 0);
    } finally {
      await fx.db.pool.query(`DELETE FROM masq.target_tables WHERE relation = '${schema}.rotated'::regclass`);
    }
  });

  test("a database of legacy migration 015 with a registered table another role owns upgrades: the registration is kept, migrate names it, erasures refuse it", async () => {
    const old = await createTestDatabase();
    const db = createDb({ databaseUrl: old.url });
    try {
      await migrate(db.pool, loadMigrations(LEGACY_MIGRATIONS_DIR).filter((m) => m.version <= 15));
      // Without DATABASE_URL this database is on an embedded server of its own: the role is made there too.
      await db.pool.query(`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${tabowner}') THEN CREATE ROLE ${tabowner} NOLOGIN; END IF; END $$`);
      await db.pool.query(`CREATE TABLE public.logins_eu (user_id varchar(128), device_type varchar(32), masked_ip varchar(256), masked_device_id varchar(256),
                                                         locale varchar(32), app_version integer, create_date date)`);
      await db.pool.query("INSERT INTO public.logins_eu VALUES ('eu-user', 'ios', 'a', 'b', 'en', 1, current_date)");
      await db.pool.query(`ALTER TABLE public.logins_eu OWNER TO ${tabowner}`);
      await db.pool.query("INSERT INTO masq.target_tables (relation) VALUES ('public.logins_eu'::regclass)");

      const m = await runMasq(["migrate"], env(old.url));
      assert.equal(m.code, 0, m.stderr);
      assert.match(m.stdout + m.stderr, new RegExp(`registered before masq refused such tables: table public\\.logins_eu is owned by ${tabowner}`));
      assert.equal((await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.target_tables WHERE relation = 'public.logins_eu'::regclass")).rows[0]!.n, 1);
      assert.equal((await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM public.logins_eu")).rows[0]!.n, 1);
      await assert.rejects(db.pool.query("SELECT * FROM masq.registered_tables()"), new RegExp(`table public\\.logins_eu is owned by ${tabowner}`));
    } finally {
      await db.pool.query("DROP TABLE IF EXISTS public.logins_eu").catch(() => undefined);
      await db.close();
      await old.close();
    }
  });
});
