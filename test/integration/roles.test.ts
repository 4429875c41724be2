import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { sendBodies } from "../../src/ops/demo.ts";
import { createDb, type Db } from "../../src/db/pool.ts";
import { loadMigrations, migrate } from "../../src/db/migrate.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { pseudonymKeyVersion } from "../../src/keys/pseudonym-keys.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { docBlock, runDocSql } from "../helpers/doc-blocks.ts";
import { createLoginRoles, type LoginRoles } from "../helpers/login-roles.ts";
import { makeRunner, TEST_MASTER_KEY, TEST_MASTER_KEY_HEX, testKeys, uniqueEvents } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";

type Who = "ingest" | "unmask" | "analyst";

/** SECURITY.md's role matrix, as written there: each statement, and whether each role may run it. */
function roleMatrix(): { sql: string; allowed: Record<Who, boolean> }[] {
  const text = readFileSync(new URL("../../SECURITY.md", import.meta.url), "utf8");
  const block = text.slice(text.indexOf("<!-- role-matrix:start -->"), text.indexOf("<!-- role-matrix:end -->"));
  const rows = block.split("\n").filter((l) => l.startsWith("| `"));
  return rows.map((l) => {
    const m = /^\| `(.+)` \| (yes|no) \| (yes|no) \| (yes|no) \|$/.exec(l);
    assert.ok(m, `a matrix row SECURITY.md's test cannot read: ${l}`);
    return { sql: m[1]!, allowed: { ingest: m[2] === "yes", unmask: m[3] === "yes", analyst: m[4] === "yes" } };
  });
}

/** What a login can do with plain SQL, whatever masq's client does: the roles are enforced by Postgres. */
describe("database roles, as real login roles made by deploy/sql/login-roles.sql", () => {
  const fx = usePipelineFixture();
  let roles: LoginRoles;
  let service: Db;
  const env = (url: string, extra: Record<string, string> = {}) => ({ DATABASE_URL: url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_LOG_LEVEL: "silent", ...extra });

  before(async () => {
    roles = await createLoginRoles(fx.db.pool, fx.pgdb.url);
    service = createDb({ databaseUrl: roles.url.service, poolSize: 3 });
    // Ingestion as the service login, with a key masq manages: it makes pseudonym key v1 through the narrow function.
    const generated = uniqueEvents(300, 71, 0.1);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, generated.map((e) => e.body));
    const keys = await testKeys(service, { pseudonymKey: null });
    const r = await (await makeRunner({ db: service, sqs: fx.sqs.client, queueUrl, keys })).run({ drain: true });
    keys.close();
    assert.equal(r.fatal, undefined);
    assert.ok(r.stats.written > 200);
    // The owner's migrate makes the audit key (row 1, where the chain begins); then one unmask as the person (row 2).
    const m = await runMasq(["migrate"], env(fx.pgdb.url));
    assert.equal(m.code, 0, m.stderr);
    const p = (await fx.db.pool.query<{ masked_ip: string }>("SELECT masked_ip FROM public.user_logins LIMIT 1")).rows[0]!.masked_ip;
    const u = await runMasq(["unmask", "--reason", "setting up the role tests", "--pseudonym", p], env(roles.url.person));
    assert.equal(u.code, 0, u.stderr);
  });
  after(async () => {
    await service.close();
    await roles.drop();
  });

  const tryAs = async (url: string, sql: string): Promise<string> => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      await c.query("BEGIN");
      await c.query(sql);
      return "yes";
    } catch (err) {
      const message = (err as Error).message;
      // Refused by the privilege system; a function the role may call can still refuse its arguments, which is "yes".
      return /^permission denied for/.test(message) ? "no" : `yes (${message})`;
    } finally {
      await c.query("ROLLBACK").catch(() => undefined);
      await c.end();
    }
  };

  test("every statement of SECURITY.md's role matrix is allowed or refused exactly as written there, for each role", async () => {
    const matrix = roleMatrix();
    assert.ok(matrix.length >= 40, `${matrix.length} rows`);
    const wrong: string[] = [];
    for (const row of matrix) {
      for (const [who, url] of [["ingest", roles.url.service], ["unmask", roles.url.person], ["analyst", roles.url.analyst]] as const) {
        const got = await tryAs(url, row.sql);
        const ok = got.startsWith("yes");
        if (ok !== row.allowed[who]) wrong.push(`${who}: ${row.sql} -> ${got}`);
      }
      const nobody = await tryAs(roles.url.nobody, row.sql);
      if (nobody !== "no") wrong.push(`no masq role: ${row.sql} -> ${nobody}`);
    }
    assert.deepEqual(wrong, []);
  });

  test("an analyst login (masq_analyst) runs the README's and data-model.md's analyst queries, and reaches nothing else of masq's", async () => {
    const c = new pg.Client({ connectionString: roles.url.analyst });
    await c.connect();
    try {
      // README.md's query after the demo, as written there.
      const readme = /-c '([^']+)'/.exec(docBlock("demo-keep-psql").text)?.[1];
      assert.ok(readme?.includes("masq.app_version_text"), "README.md's analyst query");
      const versions = await c.query<{ app_version_text: string }>(readme!);
      assert.ok(versions.rows.length > 0 && versions.rows.every((r) => /^\d+\.\d+\.\d+$/.test(r.app_version_text)), JSON.stringify(versions.rows));
      const [shared, byVersion] = await runDocSql("analyst-queries", c);
      assert.equal(byVersion!.rows.length, versions.rows.length);
      assert.ok(Array.isArray(shared!.rows));
      // What USAGE on schema masq could reach beyond app_version_text: only pure functions and triggers.
      const callable = await c.query<{ f: string }>(
        `SELECT p.oid::regprocedure::text AS f FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'masq' AND has_function_privilege(p.oid, 'EXECUTE') AND p.prorettype <> 'trigger'::regtype ORDER BY 1`,
      );
      assert.deepEqual(callable.rows.map((r) => r.f), [
        "masq.app_version_text(integer)",
        "masq.retention_cutoff(integer)",
      ]);
      const readable = await c.query<{ t: string }>(
        `SELECT c.oid::regclass::text AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'masq' AND c.relkind IN ('r', 'v', 'm', 'p', 'S') AND has_any_column_privilege(c.oid, 'SELECT') ORDER BY 1`,
      );
      assert.deepEqual(readable.rows, [], "no table of masq's is readable by an analyst");
    } finally {
      await c.end();
    }
    // A table `masq migrate` registers later is readable too; a login without masq_analyst still cannot call the function.
    assert.equal(await tryAs(roles.url.nobody, "SELECT masq.app_version_text(2003001)"), "no");
    assert.equal(await tryAs(roles.url.analyst, "SELECT masq.app_version_text(2003001)"), "yes");
  });

  test("the service login runs status (exact counts where it may read, the estimate for the table it only writes) and migrate as a no-op", async () => {
    const s = await runMasq(["status", "--json"], env(roles.url.service));
    assert.equal(s.code, 0, s.stdout + s.stderr);
    const status = JSON.parse(s.stdout) as { database: { schemaVersion: number; targetRows: { exact: boolean }; vault: { retiringVersion: number | null; masterKeys: string[] } } };
    assert.equal(status.database.schemaVersion, loadMigrations().at(-1)!.version);
    assert.equal(status.database.targetRows.exact, false);
    assert.equal(status.database.vault.retiringVersion, null);
    // MASQ_MIGRATE=true as this login: nothing pending, nothing needing the owner.
    assert.deepEqual((await migrate(service.pool)).applied, []);
    const m = await runMasq(["migrate"], env(roles.url.service));
    assert.equal(m.code, 0, m.stderr);
    // A release that brings a migration: refused with the step to take, not a bare permission error.
    const next = { version: 999, name: "999_next", sql: "CREATE TABLE masq.next_thing (id int)" };
    await assert.rejects(migrate(service.pool, [...loadMigrations(), next]), /999_next are pending and this login may not apply them .*run `masq migrate` once as the schema owner/);
  });

  test("a person cannot read ciphertext without a committed audit row, nor leave an unsealed one, nor use another login's", async () => {
    const c = new pg.Client({ connectionString: roles.url.person });
    await c.connect();
    const trail = async () => Number((await fx.db.pool.query<{ n: string }>("SELECT count(*) AS n FROM masq.audit")).rows[0]!.n);
    const p = (await fx.db.pool.query<{ masked_ip: string }>("SELECT masked_ip FROM public.user_logins LIMIT 1")).rows[0]!.masked_ip;
    try {
      const before = await trail();
      // Step 1 and step 2 in one transaction, then ROLLBACK: step 2 refuses, so nothing was handed out unrecorded.
      await c.query("BEGIN");
      const seq = (await c.query<{ seq: string }>("SELECT seq::text FROM masq.audit_reveal_vault('trying', '{}', '{}', '{ip}', $1, 10, 1)", [[p]])).rows[0]!.seq;
      await assert.rejects(c.query("SELECT * FROM masq.vault_ciphertexts($1)", [seq]), /not a committed, recent unmask of this login/);
      await c.query("ROLLBACK");
      assert.equal(await trail(), before);
      // Committing an unsealed row fails at COMMIT: the row does not stay.
      await c.query("BEGIN");
      await c.query("SELECT masq.audit_reveal_vault('trying', '{}', '{}', '{ip}', $1, 10, 1)", [[p]]);
      await assert.rejects(c.query("COMMIT"), /was not sealed before commit/);
      assert.equal(await trail(), before);
      // Another login's committed row hands out nothing to this one.
      const other = (await fx.db.pool.query<{ seq: string }>("SELECT seq::text FROM masq.audit WHERE action = 'unmask' ORDER BY seq LIMIT 1")).rows[0]!.seq;
      const service = new pg.Client({ connectionString: roles.url.replayer });
      await service.connect();
      await assert.rejects(service.query("SELECT * FROM masq.vault_ciphertexts($1)", [other]), /not a committed, recent unmask of this login/);
      await service.end();
    } finally {
      await c.end();
    }
  });

  test("the server records who: session_user and the role set with SET ROLE, whatever the client reports", async () => {
    const p = (await fx.db.pool.query<{ masked_device_id: string }>("SELECT masked_device_id FROM public.user_logins LIMIT 1")).rows[0]!.masked_device_id;
    const r = await runMasq(["unmask", "--reason", "who am i", "--pseudonym", p], env(roles.url.person, { USER: "someone-else" }));
    assert.equal(r.code, 0, r.stderr);
    const row = (
      await fx.db.pool.query<{ login_role: string; effective_role: string; client_reported: Record<string, string> }>(
        "SELECT login_role, effective_role, client_reported FROM masq.audit WHERE reason = 'who am i'",
      )
    ).rows[0]!;
    assert.equal(row.login_role, roles.names.person);
    assert.equal(row.effective_role, roles.names.person);
    assert.equal(typeof row.client_reported.os_user, "string");
    // With SET ROLE the role in effect is recorded too (a reveal by plain SQL, rolled back).
    const c = new pg.Client({ connectionString: roles.url.person });
    await c.connect();
    try {
      await c.query("BEGIN");
      await c.query("SET LOCAL ROLE masq_unmask");
      const seq = (await c.query<{ seq: string }>("SELECT seq::text FROM masq.audit_reveal_vault('set role', '{}', '{}', '{}', '{}', 1, 1)")).rows[0]!.seq;
      const a = (await c.query<{ login_role: string; effective_role: string }>("SELECT login_role, effective_role FROM masq.audit WHERE seq = $1", [seq])).rows[0]!;
      assert.deepEqual(a, { login_role: roles.names.person, effective_role: "masq_unmask" });
    } finally {
      await c.query("ROLLBACK");
      await c.end();
    }
  });

  test("quarantine replay: a person with masq_unmask only is told what is missing; with masq_ingest too it replays, audited", async () => {
    const only = await runMasq(["quarantine", "replay", "--all"], env(roles.url.person));
    assert.equal(only.code, 1);
    assert.match(only.stderr, /this login lacks masq_ingest: GRANT masq_ingest TO <your login>/);
    assert.doesNotMatch(only.stderr, /pseudonym_rotation/);
    const before = Number((await fx.db.pool.query<{ n: string }>("SELECT count(*) AS n FROM masq.audit WHERE action = 'replay'")).rows[0]!.n);
    const both = await runMasq(["quarantine", "replay", "--all"], env(roles.url.replayer));
    // Every record is still rejected (the bodies are as bad as before): exit 1, but through the whole path.
    assert.match(both.stdout, /replayed 0, already replayed or gone 0, refused by the table 0/, both.stderr);
    const rows = (
      await fx.db.pool.query<{ login_role: string; value_count: number }>("SELECT login_role, value_count FROM masq.audit WHERE action = 'replay' ORDER BY seq")
    ).rows.slice(before);
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.login_role, roles.names.replayer);
    const kept = Number((await fx.db.pool.query<{ n: string }>("SELECT count(*) AS n FROM masq.quarantine WHERE body_ciphertext IS NOT NULL")).rows[0]!.n);
    assert.equal(rows[0]!.value_count, kept);
  });

  test("ingestion's credentials cannot block a rotation: a planted data key is left alone, both rotations finish, status stays clean", async () => {
    const c = new pg.Client({ connectionString: roles.url.service });
    await c.connect();
    try {
      // What the red team did, now refused: a 'retiring' key, a version at the integer limit, a key of another provider.
      await assert.rejects(c.query("INSERT INTO masq.pseudonym_keys (version, state, provider, fingerprint) VALUES (2147483647, 'retiring', 'external', 'x')"), /permission denied/);
      assert.equal((await c.query<{ ok: boolean }>("SELECT masq.create_first_pseudonym_key('local', 'local:0', '\\x00', '0000000000000000') AS ok")).rows[0]!.ok, false);
      await assert.rejects(c.query("SELECT masq.add_data_key(gen_random_uuid(), 'kms', 'arn:aws:kms:eu-west-1:1:key/x', '\\x00')"), /another provider/);
      // What it still can: a data key under a master key nobody has. Unused, it cannot hold a rotation back.
      await c.query("SELECT masq.add_data_key(gen_random_uuid(), 'local', 'local:ffffffffffffffff', '\\x0102')");
    } finally {
      await c.end();
    }
    const owner = env(fx.pgdb.url);
    const master = await runMasq(["rotate", "master-key"], owner);
    assert.equal(master.code, 0, master.stdout + master.stderr);
    assert.match(master.stdout, /left alone: 1 data key\(s\) that no configured master key opens and no value uses/);
    const pseudonym = await runMasq(["rotate", "pseudonym-key"], owner);
    assert.equal(pseudonym.code, 0, pseudonym.stdout + pseudonym.stderr);
    assert.match(pseudonym.stdout, /^finished: pseudonym key version 1 retired/m);
    const s = await runMasq(["status"], env(roles.url.service));
    assert.equal(s.code, 0, s.stderr);
    assert.doesNotMatch(s.stdout, /rotation in progress/);
    // And the rotations are in the trail, next to the unmasks.
    const actions = (await fx.db.pool.query<{ action: string }>("SELECT DISTINCT action FROM masq.audit")).rows.map((r) => r.action).sort();
    assert.deepEqual(actions, ["audit-key", "replay", "rotate-master-key", "rotate-pseudonym-key", "unmask"]);
  });

  test("a value planted with ingestion's credentials is refused by unmask, replaced when the true value arrives, and dropped by a rotation", async () => {
    const provider = new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY));
    const version = (await fx.db.pool.query<{ version: number }>("SELECT version FROM masq.pseudonym_keys WHERE state = 'active'")).rows[0]!.version;
    // The service login and the service's master key: everything the red team used.
    const keys = await testKeys(service, { pseudonymKey: null });
    const truth = "203.0.113.200";
    const pseudonym = keys.pseudonym.pseudonymizer.pseudonymize("ip", truth);
    const { seal } = await import("../../src/keys/data-keys.ts");
    const { vaultAad } = await import("../../src/keys/data-keys.ts");
    const dk = await keys.dataKeys.reserve(1);
    const fake = seal(dk.keyObject, Buffer.from("10.66.66.66"), vaultAad("ip", pseudonym));
    await service.pool.query("SELECT masq.add_vault_values($1, '{ip}', $2, $3, $4, $5)", [version, [pseudonym], [dk.id], [fake.nonce], [fake.ciphertext]]);

    const refused = await runMasq(["unmask", "--reason", "planted value", "--pseudonym", pseudonym], env(roles.url.person));
    assert.equal(refused.code, 1);
    assert.ok(!refused.stdout.includes("10.66.66.66"), refused.stdout);
    assert.match(refused.stderr, new RegExp(`the vault value of ip ${pseudonym} is not that pseudonym's value.*not shown; marked suspect`));
    assert.equal((await fx.db.pool.query<{ suspect: boolean }>("SELECT suspect FROM masq.vault WHERE pseudonym = $1", [pseudonym])).rows[0]!.suspect, true);
    // The flag is a sealed row of its own, naming the value and the reveal that found it (103_audit.sql).
    const flag = (
      await fx.db.pool.query<{ login_role: string; subjects: string[]; reveal: string; sealed: boolean }>(
        `SELECT a.login_role, a.subjects, a.selector ->> 'reveal' AS reveal, a.mac IS NOT NULL AS sealed
         FROM masq.vault v JOIN masq.audit a ON a.seq = v.suspect_seq WHERE v.pseudonym = $1 AND a.action = 'vault-suspect'`,
        [pseudonym],
      )
    ).rows;
    assert.equal(flag.length, 1);
    assert.deepEqual(flag[0]!.subjects, [`ip:${pseudonym}`]);
    assert.equal(flag[0]!.login_role, roles.names.person);
    assert.ok(flag[0]!.sealed);
    const reveal = (await fx.db.pool.query<{ action: string; subjects: string[] }>("SELECT action, subjects FROM masq.audit WHERE seq = $1", [flag[0]!.reveal])).rows[0]!;
    assert.deepEqual(reveal, { action: "unmask", subjects: [`ip:${pseudonym}`] });

    // The true value arrives: ingestion (as the service login) replaces the planted row.
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, [JSON.stringify({ user_id: "u-truth", device_type: "ios", ip: truth, device_id: "111-22-3333", locale: "en", app_version: "1.2.3" })]);
    const r = await (await makeRunner({ db: service, sqs: fx.sqs.client, queueUrl, keys })).run({ drain: true });
    assert.equal(r.stats.written, 1);
    const shown = await runMasq(["unmask", "--reason", "after the true value", "--pseudonym", pseudonym], env(roles.url.person));
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, new RegExp(`ip\\s+${pseudonym}\\s+${truth.replace(/\./g, "\\.")}`));

    // Planted again under a value never seen: the rotation drops it (counted) instead of giving its rows the fake's pseudonym.
    const unseen = keys.pseudonym.pseudonymizer.pseudonymize("ip", "203.0.113.201");
    const fake2 = seal(dk.keyObject, Buffer.from("10.66.66.67"), vaultAad("ip", unseen));
    await service.pool.query("SELECT masq.add_vault_values($1, '{ip}', $2, $3, $4, $5)", [version, [unseen], [dk.id], [fake2.nonce], [fake2.ciphertext]]);
    keys.close();
    const rot = await runMasq(["rotate", "pseudonym-key"], env(fx.pgdb.url));
    assert.equal(rot.code, 0, rot.stdout + rot.stderr);
    assert.match(rot.stdout, /1 vault value\(s\) were not their pseudonym's value/);
    const next = await pseudonymKeyVersion(fx.db.pool, provider, version + 1);
    const fakeUnder = next.pseudonymizer.pseudonymize("ip", "10.66.66.67");
    assert.equal((await fx.db.pool.query("SELECT 1 FROM masq.vault WHERE pseudonym = $1", [fakeUnder])).rowCount, 0);
    provider.close();
  });

  test("quarantine replay --all with a contract, as the replayer: it reads the registry, and refuses while another contract's table is registered", async () => {
    const dir = mkdtempSync(join(tmpdir(), "masq-roles-replay-"));
    try {
      const contract = (event: string, table: string) =>
        `version: 1\nevents:\n  ${event}:\n    match: all\n    table: ${table}\n    subject: account_id\n    unknown: quarantine\n    fields:\n      account_id: { type: string, max_length: 64, treatment: keep, column: account_id }\n`;
      const mine = join(dir, "mine.yaml");
      writeFileSync(mine, contract("visit", "rr_visits"));
      writeFileSync(join(dir, "other.yaml"), contract("note", "rr_notes"));
      for (const file of [mine, join(dir, "other.yaml")]) {
        const m = await runMasq(["migrate", "--contract", file], env(fx.pgdb.url));
        assert.equal(m.code, 0, m.stderr);
      }
      const r = await runMasq(["quarantine", "replay", "--all", "--contract", mine], env(roles.url.replayer));
      assert.equal(r.code, 2, r.stderr + r.stdout);
      assert.match(r.stderr, /^masq: cannot tell this contract's quarantined records from another contract's \(--all\): the database also has table\(s\) public\.rr_notes, which/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
