import assert from "node:assert/strict";
import { mkdtempSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, test } from "node:test";
import pg from "pg";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { commitMessages } from "../../src/ingest/commit-batch.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { createLoginRoles } from "../helpers/login-roles.ts";
import { TABLE, TEST_KEY, TEST_MASTER_KEY_HEX, testKeys } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";
import { runDocCommands, runDocSql } from "../helpers/doc-blocks.ts";
import { MASQ_BIN } from "../helpers/masq-process.ts";

const DAY = 86_400_000;
const daysAgo = (d: number) => new Date(Date.now() - d * DAY);

const event = (user: string, ip: string, device: string) => JSON.stringify({ user_id: user, app_version: "2.3.0", device_type: "ios", ip, locale: "en", device_id: device });

/**
 * Retention (104_lifecycle.sql, `masq vault prune`): what goes is exactly the vault entries that only rows older than the
 * period use and the quarantine records older than it; what a recent row or recent quarantine record uses stays.
 */
describe("masq vault prune", () => {
  const fx = usePipelineFixture();
  let env: Record<string, string>;

  /** Rows 100 days old and today; a quarantine record from today naming an old-only ip; one 100 days old. */
  const ingest = async () => {
    await fx.reset();
    const keys = await testKeys(fx.db);
    const old = daysAgo(100);
    const now = new Date();
    await commitMessages(fx.db.pool, TABLE, keys, [
      { messageId: "old-1", body: event("u-old", "10.0.0.1", "dev-old-only"), sentAt: old, receivedAt: old },
      { messageId: "old-2", body: event("u-old", "10.0.0.2", "dev-shared"), sentAt: old, receivedAt: old },
      { messageId: "new-1", body: event("u-new", "10.0.0.3", "dev-shared"), sentAt: now, receivedAt: now },
      { messageId: "old-3", body: event("u-old", "10.0.0.4", "dev-quarantined"), sentAt: old, receivedAt: old },
      // Refused (no user_id): its redacted copy shows the pseudonyms of 10.0.0.4 and dev-quarantined.
      { messageId: "q-new", body: JSON.stringify({ app_version: "2.3.0", device_type: "ios", ip: "10.0.0.4", locale: "en", device_id: "dev-quarantined" }), sentAt: now, receivedAt: now },
      { messageId: "q-old", body: JSON.stringify({ user_id: "u-q", ip: "10.0.0.9" }), sentAt: old, receivedAt: old },
    ]);
    await fx.db.pool.query("UPDATE masq.quarantine SET quarantined_at = now() - interval '100 days' WHERE message_id = 'q-old'");
    env = { DATABASE_URL: fx.pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_PSEUDONYM_KEY: Buffer.from(TEST_KEY).toString("hex"), MASQ_LOG_LEVEL: "silent", MASQ_VAULT_RETENTION_DAYS: "30" };
  };

  const pseudonyms = createPseudonymizer(TEST_KEY);
  const subject = (kind: "ip" | "device_id", value: string) => `${kind}:${pseudonyms.pseudonymize(kind, value)}`;

  const vaultKeys = async () => (await fx.db.pool.query<{ k: string }>("SELECT kind || ':' || pseudonym AS k FROM masq.vault ORDER BY 1")).rows.map((r) => r.k);
  const quarantineIds = async () => (await fx.db.pool.query<{ id: string }>("SELECT message_id AS id FROM masq.quarantine ORDER BY 1")).rows.map((r) => r.id);
  const pruneAudits = async () =>
    (await fx.db.pool.query<{ reason: string; subjects: string[]; value_count: number; selector: Record<string, unknown>; login_role: string }>(
      "SELECT reason, subjects, value_count, selector, login_role FROM masq.audit WHERE action = 'vault-prune' ORDER BY seq",
    )).rows;

  test("prune deletes exactly the old-only vault entries and old quarantine records; dry-run changes nothing; audited", async () => {
    await ingest();
    // What must go: the old-only ip and device of old-1, and the ip of old-2 (its device is shared with a new row).
    const gone = [subject("device_id", "dev-old-only"), subject("ip", "10.0.0.1"), subject("ip", "10.0.0.2")].sort();
    const before = await vaultKeys();
    assert.equal(before.length, 7); // 4 ips, 3 devices

    const dry = await runMasq(["vault", "prune", "--dry-run"], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /would prune 3 of 7 vault entry\(ies\) that no row of public\.user_logins from the last 30 days uses, and 1 quarantine record\(s\)/);
    assert.deepEqual(await vaultKeys(), before);
    assert.deepEqual(await quarantineIds(), ["q-new", "q-old"]);
    assert.equal((await pruneAudits()).length, 0);

    const r = await runMasq(["vault", "prune"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /pruned 3 of 7 vault entry\(ies\)/);
    assert.deepEqual(await vaultKeys(), before.filter((k) => !gone.includes(k)));
    assert.deepEqual(await quarantineIds(), ["q-new"]);
    assert.equal((await fx.db.pool.query("SELECT 1 FROM public.user_logins")).rowCount, 4, "rows are not deleted");
    // Every row from inside the period still has both its values.
    const orphans = await fx.db.pool.query(
      `SELECT 1 FROM public.user_logins t WHERE t.create_date >= current_date - 30 AND (
         NOT EXISTS (SELECT 1 FROM masq.vault v WHERE v.kind = 'ip' AND v.pseudonym = t.masked_ip) OR
         NOT EXISTS (SELECT 1 FROM masq.vault v WHERE v.kind = 'device_id' AND v.pseudonym = t.masked_device_id))`,
    );
    assert.equal(orphans.rowCount, 0);

    const audits = await pruneAudits();
    assert.equal(audits.length, 2);
    assert.deepEqual(audits[0]!.subjects, ["q-old"]);
    assert.deepEqual(audits[0]!.selector, { pass: "quarantine", retention_days: 30, cutoff: audits[0]!.selector.cutoff });
    assert.deepEqual(audits[1]!.subjects, gone);
    assert.equal(audits[1]!.value_count, 3);
    for (const a of audits) assert.equal(a.reason, "retention 30 days");
    const verify = await runMasq(["audit", "verify"], env);
    assert.equal(verify.code, 0, verify.stderr + verify.stdout);

    // Again: nothing left to prune, no audit row for nothing.
    const again = await runMasq(["vault", "prune"], env);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /pruned 0 of 4 /);
    assert.equal((await pruneAudits()).length, 2);
  });

  test("small batches walk the whole vault", async () => {
    await ingest();
    const r = await runMasq(["vault", "prune", "--batch-size", "2"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /pruned 3 of 7 /);
    assert.equal((await vaultKeys()).length, 4);
  });

  test("MASQ_VAULT_RETENTION_DAYS must be a positive whole number; unset, prune says so", async () => {
    for (const bad of ["0", "-3", "abc", "1.5", "99999999"]) {
      const r = await runMasq(["vault", "prune", "--dry-run"], { ...env, MASQ_VAULT_RETENTION_DAYS: bad });
      assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, /^masq: .*\(MASQ_VAULT_RETENTION_DAYS\)/);
    }
    const unset = await runMasq(["vault", "prune"], { ...env, MASQ_VAULT_RETENTION_DAYS: undefined });
    assert.equal(unset.code, 2);
    assert.match(unset.stderr, /MASQ_VAULT_RETENTION_DAYS.*not set/);
  });

  test("roles: masq_erase prunes, others are refused, and plain SQL cannot delete more or unaudited", async () => {
    await ingest();
    const roles = await createLoginRoles(fx.db.pool, fx.pgdb.url);
    const eraser = "t_eraser_prune";
    await fx.db.pool.query(`DROP ROLE IF EXISTS ${eraser}`);
    await fx.db.pool.query(`CREATE ROLE ${eraser} LOGIN PASSWORD 'pw-eraser'; GRANT masq_erase TO ${eraser}`);
    const u = new URL(fx.pgdb.url);
    u.username = eraser;
    u.password = "pw-eraser";
    const eraserUrl = u.toString();
    try {
      for (const url of [roles.url.service, roles.url.person, roles.url.nobody]) {
        const r = await runMasq(["vault", "prune"], { ...env, DATABASE_URL: url });
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, /permission denied/);
      }
      assert.equal((await vaultKeys()).length, 7);

      const c = new pg.Client({ connectionString: eraserUrl });
      await c.connect();
      try {
        await assert.rejects(c.query("DELETE FROM masq.vault"), /permission denied/);
        await assert.rejects(c.query("DELETE FROM masq.quarantine"), /permission denied/);
        await assert.rejects(c.query("SELECT ciphertext FROM masq.vault"), /permission denied/);
        await assert.rejects(c.query("SELECT masq.vault_prune_batch('masq.vault'::regclass, 30, NULL, NULL, 100, '{}', NULL)"), /not a table masq writes/);
        await assert.rejects(c.query("SELECT masq.vault_prune_batch('public.user_logins'::regclass, 0, NULL, NULL, 100, '{}', NULL)"), /1 to 36500 days/);
        // A deletion by hand appends an audit row that only the audit key can seal: the COMMIT is refused.
        await c.query("BEGIN");
        await c.query("SELECT * FROM masq.vault_prune_batch('public.user_logins'::regclass, 30, NULL, NULL, 100, '{}', 1)").catch((err: unknown) => {
          // No audit key yet on this database: the function refuses before deleting anything.
          assert.match(String(err), /audit key version 1 does not exist/);
        });
        await assert.rejects(c.query("COMMIT"), /not sealed|current transaction is aborted/);
      } finally {
        await c.end();
      }
      assert.equal((await vaultKeys()).length, 7);

      const r = await runMasq(["vault", "prune"], { ...env, DATABASE_URL: eraserUrl });
      assert.equal(r.code, 0, r.stderr);
      assert.equal((await vaultKeys()).length, 4);
      const audits = await pruneAudits();
      assert.equal(audits.filter((a) => a.login_role === eraser).length, 2);
      const verify = await runMasq(["audit", "verify"], env);
      assert.equal(verify.code, 0, verify.stderr + verify.stdout);
    } finally {
      await fx.db.pool.query(`DROP OWNED BY ${eraser}; DROP ROLE ${eraser}`).catch(() => undefined);
      await roles.drop();
    }
  });

  test("operations.md: the retention examples and the suggested indexes run as documented", async () => {
    await ingest();
    const bin = mkdtempSync(join(tmpdir(), "masq-prune-bin-"));
    symlinkSync(MASQ_BIN, join(bin, "masq"));
    const [dry, prune] = await runDocCommands("retention-examples", { env: { ...env, PATH: `${bin}:${dirname(process.execPath)}:${process.env.PATH ?? ""}`, HOME: process.env.HOME } });
    assert.equal(dry!.code, 0, dry!.stderr);
    assert.match(dry!.stdout, /^would prune 3 of 7 /);
    assert.equal(prune!.code, 0, prune!.stderr);
    assert.match(prune!.stdout, /^pruned 3 of 7 /);
    const c = new pg.Client({ connectionString: fx.pgdb.url });
    await c.connect();
    try {
      await runDocSql("retention-indexes", c);
      const idx = await c.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_indexes WHERE tablename = 'user_logins' AND indexname LIKE 'user_logins_masked_%'");
      assert.equal(idx.rows[0]!.n, 2);
      await c.query("DROP INDEX public.user_logins_masked_ip_idx, public.user_logins_masked_device_id_idx");
    } finally {
      await c.end();
    }
  });
});
