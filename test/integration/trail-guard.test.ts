import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { auditKeyFingerprint } from "../../src/keys/audit-key.ts";
import { sealAudit } from "../../src/lifecycle/audit.ts";
import { sendBodies } from "../../src/ops/demo.ts";
import { createDb, type Db, inTransaction } from "../../src/db/pool.ts";
import { LEGACY_MIGRATIONS_DIR, loadMigrations, migrate } from "../../src/db/migrate.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { pseudonymKeyContext, pseudonymKeyFingerprint } from "../../src/keys/pseudonym-keys.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { createLoginRoles, type LoginRoles } from "../helpers/login-roles.ts";
import { makeRunner, TEST_MASTER_KEY, TEST_MASTER_KEY_HEX, testKeys, uniqueEvents } from "../helpers/pipeline.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";
import { runMasq } from "../helpers/run-masq.ts";

/**
 * Issue 17, findings 4, 6 and 8: nobody blanks the trail unnoticed, and no login but the owner destroys or replaces
 * a vault value, a key or the audit key without a sealed audit row naming it.
 */
const silent = { MASQ_LOG_LEVEL: "silent" };

/** Whether a login may run a statement (rolled back either way): "ok", or the error Postgres gave. */
async function trySql(url: string, sql: string, values: unknown[] = []): Promise<{ ok: boolean; rows: Record<string, unknown>[]; error?: string }> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query("BEGIN");
    const r = await c.query<Record<string, unknown>>(sql, values);
    await c.query("COMMIT");
    return { ok: true, rows: r.rows };
  } catch (err) {
    await c.query("ROLLBACK").catch(() => undefined);
    return { ok: false, rows: [], error: (err as Error).message };
  } finally {
    await c.end();
  }
}

describe("finding 4: an owner who blanks, deletes and edits audit rows of a database made at legacy migration 010 fails `masq audit verify`", () => {
  let pgdb: TestDatabase;
  let db: Db;
  let env: Record<string, string>;
  let checkpoint: string;
  const provider = new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY));

  before(async () => {
    pgdb = await createTestDatabase();
    db = createDb({ databaseUrl: pgdb.url, poolSize: 3 });
    env = { DATABASE_URL: pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, ...silent };
    const all = loadMigrations(LEGACY_MIGRATIONS_DIR);
    // Two rows from before the chain (masq.unmask_audit, copied by legacy migration 005).
    await migrate(db.pool, all.filter((m) => m.version <= 4));
    await db.pool.query(
      "INSERT INTO masq.unmask_audit (command, reason, selector, pseudonyms, value_count) VALUES ('unmask', 'legacy one', '{}', '{a}', 1), ('pseudonym', 'legacy two', '{}', '{b}', 1)",
    );
    await migrate(db.pool, all.filter((m) => m.version <= 10));
    // The audit key and six sealed rows, as c75110e made them (its create_audit_key, audit_append and audit_seal).
    const g = await provider.generateKey({ purpose: "audit", keyId: "audit-v1" });
    await db.pool.query("SELECT masq.create_audit_key($1, $2, $3, $4)", ["local", g.masterKeyId, Buffer.from(g.wrapped), auditKeyFingerprint(g.plaintext)]);
    const key = { version: 1, key: g.plaintext, chainStart: 3n };
    for (const [i, action] of ["unmask", "rotate-pseudonym-key", "unmask", "subject-export", "unmask", "vault-prune"].entries()) {
      await inTransaction(db.pool, async (c) => {
        const r = await c.query<{ seq: string }>("SELECT masq.audit_append($1, $2, '{}', '{}', ARRAY['ip:x'], 1)::text AS seq", [action, `row ${i + 3} of the chain`]);
        await sealAudit(c, key, r.rows[0]!.seq);
      });
    }
  });
  after(async () => {
    await db.close();
    await pgdb.close();
  });

  test("the populated database upgrades in place: every row kept, the chain start recorded, and verify passes", async () => {
    const before = (await db.pool.query("SELECT * FROM masq.audit ORDER BY seq")).rows;
    const m = await runMasq(["migrate"], env);
    assert.equal(m.code, 0, m.stderr);
    assert.deepEqual((await db.pool.query("SELECT * FROM masq.audit ORDER BY seq")).rows, before);
    assert.equal((await db.pool.query<{ s: string }>("SELECT chain_start::text AS s FROM masq.audit_keys")).rows[0]!.s, "3");
    const v = await runMasq(["audit", "verify"], env);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout, "audit trail verified: 6 row(s) checked; 2 row(s) from before the chain began at row 3 carry no MAC and are not covered\n");
    const c = await runMasq(["audit", "checkpoint"], env);
    assert.equal(c.code, 0, c.stderr);
    checkpoint = c.stdout.trim();
  });

  test("blanking every MAC, deleting two rows and editing one's reason and login: verify exits 1 naming the first row without its MAC", async () => {
    await db.pool.query(`CREATE TABLE public.audit_copy AS SELECT * FROM masq.audit; CREATE TABLE public.keys_copy AS SELECT * FROM masq.audit_keys`);
    // Exactly the review's steps, as the owner.
    await db.pool.query("ALTER TABLE masq.audit DISABLE TRIGGER audit_append_only");
    await db.pool.query("UPDATE masq.audit SET mac = NULL, prev_mac = NULL, key_version = NULL");
    await db.pool.query("DELETE FROM masq.audit WHERE seq IN (7, 8)");
    await db.pool.query("UPDATE masq.audit SET reason = 'nothing to see', login_role = 'someone_else' WHERE seq = 4");
    const v = await runMasq(["audit", "verify"], env);
    assert.equal(v.code, 1, v.stdout);
    assert.equal(v.stderr, "masq: the audit trail does not verify: row 3 has no MAC, but the chain began at row 3 (its MAC, key version or link was removed, or it was inserted outside masq)\n");
  });

  test("moving the chain start past the end, or back before it, does not hide it", async () => {
    await db.pool.query("UPDATE masq.audit_keys SET chain_start = 9");
    let v = await runMasq(["audit", "verify"], env);
    assert.equal(v.code, 1, v.stdout);
    assert.match(v.stderr, /^masq: the audit trail does not verify: row 4 \(rotate-pseudonym-key\) has no MAC, but only unmask and pseudonym rows predate the chain/);
    await db.pool.query("UPDATE masq.audit_keys SET chain_start = 2");
    v = await runMasq(["audit", "verify"], env);
    assert.equal(v.code, 1, v.stdout);
    assert.match(v.stderr, /row 2 has no MAC, but the chain began at row 2/);
  });

  test("removing the audit key as well: verify still fails on the rows that cannot predate the chain, and --against names the cut", async () => {
    await db.pool.query("DELETE FROM masq.audit_keys");
    const v = await runMasq(["audit", "verify"], env);
    assert.equal(v.code, 1, v.stdout);
    assert.match(v.stderr, /^masq: the audit trail does not verify: row 4 is not a row from before the chain/);
    // Only unmask rows left: verify alone cannot tell them from rows that predate the chain; the checkpoint can.
    await db.pool.query("DELETE FROM masq.audit WHERE action NOT IN ('unmask', 'pseudonym')");
    await db.pool.query("UPDATE masq.audit a SET seq = n.rn FROM (SELECT seq, row_number() OVER (ORDER BY seq) AS rn FROM masq.audit) n WHERE a.seq = n.seq");
    const alone = await runMasq(["audit", "verify"], env);
    assert.equal(alone.code, 0, alone.stderr);
    const against = await runMasq(["audit", "verify", "--against", checkpoint], env);
    assert.equal(against.code, 1, against.stdout);
    assert.match(against.stderr, /^masq: the audit trail does not verify: the checkpoint names a row, but no row was ever sealed here\n$/);
  });

  test("restored as it was, the trail verifies again", async () => {
    const c = await db.pool.connect();
    try {
      // Rows from before the chain have no MAC: the deferred seal check is off for this restore, as for any replica.
      await c.query("SET session_replication_role = replica");
      await c.query("DELETE FROM masq.audit; INSERT INTO masq.audit_keys SELECT * FROM public.keys_copy; INSERT INTO masq.audit SELECT * FROM public.audit_copy");
    } finally {
      await c.query("RESET session_replication_role");
      c.release();
    }
    await db.pool.query("ALTER TABLE masq.audit ENABLE TRIGGER audit_append_only");
    const v = await runMasq(["audit", "verify", "--against", checkpoint], env);
    assert.equal(v.code, 0, v.stderr);
  });
});

describe("finding 8 on a database made at legacy migration 010: an audit key planted before the upgrade", () => {
  let pgdb: TestDatabase;
  let db: Db;

  before(async () => {
    pgdb = await createTestDatabase();
    db = createDb({ databaseUrl: pgdb.url, poolSize: 2 });
  });
  after(async () => {
    await db.close();
    await pgdb.close();
  });

  test("is dropped by legacy migration 012 (no row was ever sealed under it), and the owner's migrate makes one that unwraps", async () => {
    await migrate(db.pool, loadMigrations(LEGACY_MIGRATIONS_DIR).filter((m) => m.version <= 10));
    // What any masq_unmask or masq_erase login could run on c75110e.
    await db.pool.query("SELECT masq.create_audit_key('local', 'local:0000000000000000', '\\x00', '0123456789abcdef')");
    const env = { DATABASE_URL: pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, ...silent };
    const m = await runMasq(["migrate"], env);
    assert.equal(m.code, 0, m.stderr);
    const keys = (await db.pool.query<{ master_key_id: string; chain_start: string }>("SELECT master_key_id, chain_start::text FROM masq.audit_keys")).rows;
    assert.equal(keys.length, 1);
    assert.notEqual(keys[0]!.master_key_id, "local:0000000000000000");
    assert.equal(keys[0]!.chain_start, "1");
    const v = await runMasq(["audit", "verify"], env);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout, "audit trail verified: 1 row(s) checked\n");
  });
});

describe("findings 6 and 8, as each login role", () => {
  const fx = usePipelineFixture();
  let roles: LoginRoles;
  let eraser: { name: string; url: string };
  let service: Db;
  let pseudonym: string;
  const ownerEnv = () => ({ DATABASE_URL: fx.pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, ...silent });
  const envAs = (url: string) => ({ DATABASE_URL: url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, ...silent });
  const logins = () => ({ ingest: roles.url.service, unmask: roles.url.person, replayer: roles.url.replayer, erase: eraser.url, nobody: roles.url.nobody });
  const count = async (sql: string) => Number(Object.values((await fx.db.pool.query<Record<string, string>>(sql)).rows[0]!)[0]);

  before(async () => {
    roles = await createLoginRoles(fx.db.pool, fx.pgdb.url);
    const name = `t_eraser_${randomBytes(4).toString("hex")}`;
    const password = randomBytes(18).toString("hex");
    await fx.db.pool.query(`CREATE ROLE ${name} LOGIN PASSWORD '${password}'; GRANT masq_erase TO ${name}`);
    const u = new URL(fx.pgdb.url);
    u.username = name;
    u.password = password;
    eraser = { name, url: u.toString() };
    service = createDb({ databaseUrl: roles.url.service, poolSize: 3 });
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, uniqueEvents(40, 17, 0).map((e) => e.body));
    const keys = await testKeys(service, { pseudonymKey: null });
    const r = await (await makeRunner({ db: service, sqs: fx.sqs.client, queueUrl, keys })).run({ drain: true });
    keys.close();
    assert.equal(r.stats.written, 40);
    pseudonym = (await fx.db.pool.query<{ masked_ip: string }>("SELECT masked_ip FROM public.user_logins ORDER BY user_id LIMIT 1")).rows[0]!.masked_ip;
  });
  after(async () => {
    await service.close();
    await fx.db.pool.query(`DROP OWNED BY ${eraser.name}; DROP ROLE ${eraser.name}`).catch(() => undefined);
    await roles.drop();
  });

  test("finding 8: before any audited action, no login but the owner can plant an audit key", async () => {
    for (const [who, url] of Object.entries(logins())) {
      const r = await trySql(url, "SELECT masq.create_audit_key('local','local:0000000000000000','\\x00','0123456789abcdef')");
      assert.equal(r.ok, false, `${who} planted an audit key`);
    }
    for (const [who, url] of Object.entries(logins())) {
      const r = await trySql(url, "SELECT masq.create_audit_key('local','local:0000000000000000','\\x00','0123456789abcdef', '{}'::jsonb)");
      assert.equal(r.ok, false, `${who} planted an audit key with the owner's function`);
      assert.match(r.error!, /permission denied/);
    }
    assert.equal(await count("SELECT count(*) FROM masq.audit_keys"), 0);
  });

  test("finding 8: an unmask login on a database without an audit key is told, in one line, to run masq migrate as the owner", async () => {
    const u = await runMasq(["unmask", "--reason", "no key yet", "--pseudonym", pseudonym], envAs(roles.url.person));
    assert.equal(u.code, 1, u.stdout);
    assert.equal(
      u.stderr,
      "masq: this database has no audit key yet: run masq migrate once as the schema owner with the master key configured (MASQ_MASTER_KEY or MASQ_KMS_KEY_ID), then run this again; nothing was shown\n",
    );
    assert.equal(await count("SELECT count(*) FROM masq.audit_keys"), 0);
  });

  /** A key that does not unwrap, stored as only the owner now can (or as a login could before legacy migration 012). */
  const plantBadKey = async () => {
    const c = await fx.db.pool.connect();
    try {
      // Whatever an earlier step left (on the code before the fix, the unmask login's own key and row) goes first.
      await c.query("SET session_replication_role = replica");
      await c.query("DELETE FROM masq.audit; DELETE FROM masq.audit_keys");
    } finally {
      await c.query("RESET session_replication_role");
      c.release();
    }
    const cols = await count("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'masq' AND table_name = 'audit_keys' AND column_name = 'chain_start'");
    await fx.db.pool.query(
      `INSERT INTO masq.audit_keys (version, provider, master_key_id, wrapped, fingerprint${cols > 0 ? ", chain_start" : ""})
       VALUES (1, 'local', 'local:0000000000000000', '\\x00', '0123456789abcdef'${cols > 0 ? ", 1" : ""})`,
    );
  };

  test("finding 8: with an audit key that does not unwrap, rotate pseudonym-key switches nothing and says what to do", async () => {
    await plantBadKey();
    const r = await runMasq(["rotate", "pseudonym-key"], ownerEnv());
    assert.equal(await count("SELECT count(*) FROM masq.pseudonym_rotation"), 0, "the rotation switched");
    assert.equal(await count("SELECT count(*) FROM masq.pseudonym_keys"), 1, "a second pseudonym key was made");
    assert.notEqual(r.code, 0, r.stdout);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /^masq: the audit key \(masq\.audit_keys version 1, under local:0000000000000000\) does not unwrap with the configured master key \(MASQ_MASTER_KEY\)/);
  });

  test("finding 8: --resume of a rotation in progress runs no pass and retires nothing without its audit row", async () => {
    // A rotation switched by someone else, as the switch leaves it (version 1 retiring, 2 active, the vault pass next).
    const provider = new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY));
    const g = await provider.generateKey(pseudonymKeyContext(2));
    // (On the code before the fix, the step above switched already: that rotation is the one resumed.)
    if ((await count("SELECT count(*) FROM masq.pseudonym_rotation")) === 0) await fx.db.pool.query(
      `UPDATE masq.pseudonym_keys SET state = 'retiring' WHERE version = 1;
       INSERT INTO masq.pseudonym_keys (version, state, provider, master_key_id, wrapped, fingerprint) VALUES (2, 'active', 'local', '${g.masterKeyId}', '\\x${Buffer.from(g.wrapped).toString("hex")}', '${pseudonymKeyFingerprint(g.plaintext)}');
       INSERT INTO masq.pseudonym_rotation (from_version, to_version, switched_at, target_table, phase) VALUES (1, 2, now(), 'public.user_logins', 'vault')`,
    );
    const values = await count("SELECT count(*) FROM masq.vault WHERE key_version = 1");
    const r = await runMasq(["rotate", "pseudonym-key", "--resume"], ownerEnv());
    assert.equal(await count("SELECT count(*) FROM masq.vault WHERE key_version = 1"), values, "the vault pass ran");
    assert.equal(await count("SELECT count(*) FROM masq.pseudonym_keys WHERE version = 1 AND state = 'retiring' AND wrapped IS NOT NULL"), 1, "key 1 was retired");
    assert.equal(await count("SELECT count(*) FROM masq.pseudonym_rotation WHERE phase = 'vault'"), 1);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, /^masq: the audit key \(masq\.audit_keys version 1/);
    await fx.db.pool.query(
      "DELETE FROM masq.pseudonym_rotation; DELETE FROM masq.pseudonym_keys WHERE version = 2; UPDATE masq.pseudonym_keys SET state = 'active' WHERE version = 1",
    );
  });

  test("finding 8: rotate master-key re-wraps nothing without its audit row", async () => {
    const newMaster = randomBytes(32).toString("hex");
    const before = (await fx.db.pool.query("SELECT id, master_key_id, wrapped FROM masq.data_keys ORDER BY id")).rows;
    const r = await runMasq(["rotate", "master-key"], { ...ownerEnv(), MASQ_MASTER_KEY: newMaster, MASQ_MASTER_KEY_PREVIOUS: TEST_MASTER_KEY_HEX });
    assert.deepEqual((await fx.db.pool.query("SELECT id, master_key_id, wrapped FROM masq.data_keys ORDER BY id")).rows, before, "data keys were re-wrapped");
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, /^masq: the audit key \(masq\.audit_keys version 1/);
    assert.equal(await count("SELECT count(*) FROM masq.audit"), 0);
    await fx.db.pool.query("DELETE FROM masq.audit_keys");
  });

  test("the owner's masq migrate makes the audit key (proven to unwrap) with its first sealed row, where the chain begins", async () => {
    const m = await runMasq(["migrate"], ownerEnv());
    assert.equal(m.code, 0, m.stderr);
    const k = (await fx.db.pool.query<{ chain_start: string }>("SELECT chain_start::text FROM masq.audit_keys")).rows;
    assert.deepEqual(k, [{ chain_start: "1" }]);
    const row = (await fx.db.pool.query<{ action: string; mac: Buffer | null }>("SELECT action, mac FROM masq.audit WHERE seq = 1")).rows[0]!;
    assert.equal(row.action, "audit-key");
    assert.ok(row.mac !== null);
    const u = await runMasq(["unmask", "--reason", "after migrate", "--pseudonym", pseudonym], envAs(roles.url.person));
    assert.equal(u.code, 0, u.stderr);
    const v = await runMasq(["audit", "verify"], envAs(roles.url.person));
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout, "audit trail verified: 2 row(s) checked\n");
  });

  test("finding 6: no login can flag a vault value suspect and then overwrite it; the value still unmasks", async () => {
    // A value of the vault as it is now (on the code before the fix, the steps above rotated every pseudonym).
    // The one the person's unmask (row 2) revealed, while it is there.
    const target = (
      await fx.db.pool.query<{ p: string }>("SELECT pseudonym AS p FROM masq.vault WHERE kind = 'ip' ORDER BY pseudonym = $1 DESC, pseudonym LIMIT 1", [pseudonym])
    ).rows[0]!.p;
    const stored = (await fx.db.pool.query<{ data_key_id: string; ciphertext: Buffer; key_version: number }>(
      "SELECT data_key_id, ciphertext, key_version FROM masq.vault WHERE kind = 'ip' AND pseudonym = $1",
      [target],
    )).rows[0]!;
    for (const [who, url] of Object.entries(logins())) {
      const old = await trySql(url, "SELECT masq.flag_vault_suspect(ARRAY['ip'], ARRAY[$1])", [target]);
      assert.equal(old.ok, false, `${who} flagged a value with the free-standing function`);
      // The new function wants a committed reveal of the same login that names the value: row 2 is the person's.
      const forged = await trySql(url, "SELECT masq.flag_vault_suspect(2, NULL, ARRAY['ip'], ARRAY[$1], 1) AS seq", [target]);
      assert.ok(!forged.ok || forged.rows[0]!.seq === null, `${who} flagged a value without a sealed row of its own`);
      const overwrite = await trySql(
        url,
        "SELECT masq.add_vault_values($1, ARRAY['ip'], ARRAY[$2], ARRAY[$3::uuid], ARRAY['\\x000000000000000000000000'::bytea], ARRAY['\\xdeadbeef'::bytea]) AS n",
        [stored.key_version, target, stored.data_key_id],
      );
      assert.ok(!overwrite.ok || Number(overwrite.rows[0]!.n) === 0, `${who} overwrote the value`);
    }
    const now = (await fx.db.pool.query<{ ciphertext: Buffer; suspect: boolean }>("SELECT ciphertext, suspect FROM masq.vault WHERE kind = 'ip' AND pseudonym = $1", [target])).rows[0]!;
    assert.deepEqual(now.ciphertext, stored.ciphertext);
    assert.equal(now.suspect, false);
    const u = await runMasq(["unmask", "--reason", "still there", "--pseudonym", target], envAs(roles.url.person));
    assert.equal(u.code, 0, u.stderr);
    assert.match(u.stdout, /\d+\.\d+\.\d+\.\d+|:/);
  });
});
