import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { commitMessages } from "../../src/ingest/commit-batch.ts";
import type { TableName } from "../../src/db/tables.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { TABLE, TEST_KEY, TEST_MASTER_KEY_HEX, testKeys } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";

const DAY = 86_400_000;
const login = (user: string, ip: string, device: string) => JSON.stringify({ user_id: user, app_version: "2.3.0", device_type: "ios", ip, locale: "en", device_id: device });
const EU: TableName = { schema: "public", name: "logins_eu" };

/**
 * Issue 17, findings 2 and 3: a vault value exists only with a row or record that uses it, and whether one still
 * does is decided over every registered target table and the quarantine.
 */
describe("vault values and what uses them", () => {
  const fx = usePipelineFixture();
  const env = (extra: Record<string, string> = {}) => ({
    DATABASE_URL: fx.pgdb.url,
    MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX,
    MASQ_PSEUDONYM_KEY: Buffer.from(TEST_KEY).toString("hex"),
    MASQ_LOG_LEVEL: "silent",
    ...extra,
  });
  const p = createPseudonymizer(TEST_KEY);
  const vaulted = async (kind: "ip" | "device_id", value: string) =>
    (await fx.db.pool.query("SELECT 1 FROM masq.vault WHERE kind = $1 AND pseudonym = $2", [kind, p.pseudonymize(kind, value)])).rowCount === 1;
  const count = async (sql: string) => Number((await fx.db.pool.query<{ n: string }>(sql)).rows[0]!.n);
  const orphans = (table: string, where = "true") =>
    count(`SELECT count(*) AS n FROM ${table} t WHERE ${where} AND (NOT EXISTS (SELECT 1 FROM masq.vault v WHERE v.kind = 'ip' AND v.pseudonym = t.masked_ip)
              OR NOT EXISTS (SELECT 1 FROM masq.vault v WHERE v.kind = 'device_id' AND v.pseudonym = t.masked_device_id))`);

  test("finding 2: a redelivered message after an erasure is a duplicate and brings no value back", async () => {
    await fx.reset();
    const keys = await testKeys(fx.db);
    const at = new Date();
    const message = { messageId: "redelivered-1", body: login("victim", "198.51.100.20", "victim-dev"), sentAt: at, receivedAt: at };
    // Committed, but (say) its DeleteMessageBatch failed: SQS will deliver it again.
    assert.equal((await commitMessages(fx.db.pool, TABLE, keys, [message])).written, 1);
    const erased = await runMasq(["subject", "erase", "--user-id", "victim", "--reason", "erasure request DSR-2"], env());
    assert.equal(erased.code, 0, erased.stderr);
    assert.ok(!(await vaulted("ip", "198.51.100.20")));

    // The redelivery, in the same running masq, alone and with a new message.
    const again = await commitMessages(fx.db.pool, TABLE, keys, [message]);
    assert.deepEqual([again.duplicates, again.written], [1, 0]);
    const mixed = await commitMessages(fx.db.pool, TABLE, keys, [message, { messageId: "new-1", body: login("other", "198.51.100.21", "other-dev"), sentAt: at, receivedAt: at }]);
    assert.deepEqual([mixed.duplicates, mixed.written], [1, 1]);
    assert.ok(!(await vaulted("ip", "198.51.100.20")), "the erased ip did not come back");
    assert.ok(!(await vaulted("device_id", "victim-dev")), "the erased device id did not come back");
    assert.ok(await vaulted("ip", "198.51.100.21"), "the new message's values are there");

    const unmask = await runMasq(["unmask", "--reason", "checking the erasure", "--pseudonym", p.pseudonymize("ip", "198.51.100.20")], env());
    assert.match(unmask.stderr, /not in the vault/);
    assert.ok(!unmask.stdout.includes("198.51.100.20"));
    const rerun = await runMasq(["subject", "erase", "--user-id", "victim", "--reason", "erasure request DSR-2"], env());
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.match(rerun.stdout, /Nothing of this user was left to erase/);

    // The process did not learn the values it did not write: a new message using them brings them in with it.
    await commitMessages(fx.db.pool, TABLE, keys, [{ messageId: "new-2", body: login("third", "198.51.100.20", "victim-dev"), sentAt: at, receivedAt: at }]);
    assert.equal(await orphans("public.user_logins"), 0);
  });

  test("finding 3: erasure and prune decide over every registered table", async () => {
    await fx.reset();
    const migrated = await runMasq(["migrate", "--table", "logins_eu"], env());
    assert.equal(migrated.code, 0, migrated.stderr);
    const keys = await testKeys(fx.db);
    const now = new Date();
    const old = new Date(Date.now() - 100 * DAY);
    // Today's rows of user_logins, one old row of logins_eu using the same values, and an EU user sharing user-1's.
    await commitMessages(fx.db.pool, TABLE, keys, [
      { messageId: "t-1", body: login("user-1", "198.51.100.30", "dev-today"), sentAt: now, receivedAt: now },
      { messageId: "t-2", body: login("user-1", "198.51.100.31", "dev-shared-eu"), sentAt: now, receivedAt: now },
      { messageId: "t-3", body: login("user-2", "198.51.100.33", "dev-user-2"), sentAt: now, receivedAt: now },
    ]);
    await commitMessages(fx.db.pool, EU, keys, [
      { messageId: "eu-1", body: login("eu-old", "198.51.100.30", "dev-today"), sentAt: old, receivedAt: old },
      { messageId: "eu-2", body: login("eu-old", "198.51.100.39", "dev-eu-old-only"), sentAt: old, receivedAt: old },
      { messageId: "eu-3", body: login("eu-user", "198.51.100.31", "dev-shared-eu"), sentAt: now, receivedAt: now },
      { messageId: "eu-4", body: login("user-1", "198.51.100.32", "dev-user-1-eu"), sentAt: now, receivedAt: now },
    ]);

    // Export finds the user in every registered table, unless the command names one.
    const rowsOf = (stdout: string) => (JSON.parse(stdout) as { source: string; ip: string }[]).filter((l) => l.source === "row").map((l) => l.ip).sort();
    const everywhere = await runMasq(["subject", "export", "--user-id", "user-1", "--reason", "access request DSR-3", "--format", "json"], env());
    assert.equal(everywhere.code, 0, everywhere.stderr);
    assert.deepEqual(rowsOf(everywhere.stdout), ["198.51.100.30", "198.51.100.31", "198.51.100.32"]);
    const euOnly = await runMasq(["subject", "export", "--user-id", "user-1", "--table", "logins_eu", "--reason", "access request DSR-3", "--format", "json"], env());
    assert.equal(euOnly.code, 0, euOnly.stderr);
    assert.deepEqual(rowsOf(euOnly.stdout), ["198.51.100.32"]);

    // Naming the table: that table's rows only; nothing another table's rows use goes, the same user's included.
    const one = await runMasq(["subject", "erase", "--user-id", "user-1", "--table", "user_logins", "--reason", "erasure request DSR-3"], env());
    assert.equal(one.code, 0, one.stderr);
    assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'user-1'"), 0);
    assert.equal(await count("SELECT count(*) AS n FROM public.logins_eu WHERE user_id = 'user-1'"), 1);
    assert.ok(await vaulted("ip", "198.51.100.31"), "eu-user's value stays");
    assert.ok(await vaulted("device_id", "dev-shared-eu"), "eu-user's value stays");
    assert.ok(await vaulted("ip", "198.51.100.30"), "a value only an old EU row uses stays until retention takes it");
    assert.equal(await orphans("public.logins_eu"), 0, "no EU row lost its values");

    // Naming none: every registered table.
    const all = await runMasq(["subject", "erase", "--user-id", "user-1", "--reason", "erasure request DSR-3"], env());
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /\(public\.user_logins\)[^]*rows\s+0\n[^]*\(public\.logins_eu\)[^]*rows\s+1\n/);
    assert.equal(await count("SELECT count(*) AS n FROM public.logins_eu WHERE user_id = 'user-1'"), 0);
    assert.ok(!(await vaulted("ip", "198.51.100.32")) && !(await vaulted("device_id", "dev-user-1-eu")), "user-1's EU values went with the row");
    assert.ok(await vaulted("ip", "198.51.100.31"), "eu-user's value stays");
    assert.equal(await orphans("public.logins_eu"), 0, "no EU row lost its values");

    const pruned = await runMasq(["vault", "prune", "--table", "logins_eu"], env({ MASQ_VAULT_RETENTION_DAYS: "30" }));
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.equal(await count("SELECT count(*) AS n FROM public.user_logins"), 1);
    assert.equal(await orphans("public.user_logins"), 0, "today's user_logins rows keep their values");
    assert.equal(await orphans("public.logins_eu", "t.create_date >= current_date - 30"), 0, "recent EU rows keep theirs");
    assert.ok(!(await vaulted("ip", "198.51.100.39")) && !(await vaulted("device_id", "dev-eu-old-only")), "what only old rows use goes");
  });
  test("a vault-only erasure of every table erases the user's values; one of a named table keeps what the user's other rows use", async () => {
    await fx.reset();
    const migrated = await runMasq(["migrate", "--table", "logins_eu"], env());
    assert.equal(migrated.code, 0, migrated.stderr);
    const keys = await testKeys(fx.db);
    const now = new Date();
    // victim in both tables (one pair of values in both), a bystander sharing nothing.
    await commitMessages(fx.db.pool, TABLE, keys, [
      { messageId: "v-1", body: login("victim", "198.51.100.50", "victim-dev"), sentAt: now, receivedAt: now },
      { messageId: "v-2", body: login("victim", "198.51.100.51", "victim-dev-home"), sentAt: now, receivedAt: now },
      { messageId: "b-1", body: login("bystander", "198.51.100.59", "bystander-dev"), sentAt: now, receivedAt: now },
    ]);
    await commitMessages(fx.db.pool, EU, keys, [
      { messageId: "v-eu-1", body: login("victim", "198.51.100.50", "victim-dev"), sentAt: now, receivedAt: now },
      { messageId: "v-eu-2", body: login("victim", "198.51.100.52", "victim-dev-eu"), sentAt: now, receivedAt: now },
    ]);

    // --table: only what the user's rows of that table use and nothing else (their EU rows stay, with their values).
    const one = await runMasq(["subject", "erase", "--user-id", "victim", "--vault-only", "--table", "user_logins", "--reason", "erasure request DSR-5"], env());
    assert.equal(one.code, 0, one.stderr);
    assert.ok(!(await vaulted("ip", "198.51.100.51")) && !(await vaulted("device_id", "victim-dev-home")), "user_logins-only values went");
    assert.ok(await vaulted("ip", "198.51.100.50") && (await vaulted("device_id", "victim-dev")), "values the EU rows also use stay");
    assert.equal(await orphans("public.logins_eu", "t.user_id = 'victim'"), 0, "the EU rows keep their values");

    // The dry run counts per table: a value both tables' rows use is in both counts (the erasure takes it once).
    const dry = await runMasq(["subject", "erase", "--user-id", "victim", "--vault-only", "--dry-run"], env());
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual([...dry.stdout.matchAll(/vault values\s+(\d+)/g)].map((m) => Number(m[1])), [2, 4], dry.stdout);
    assert.ok(await vaulted("ip", "198.51.100.50"), "a dry run changes nothing");

    // No --table: every registered table, so the user's rows anywhere keep nothing.
    const all = await runMasq(["subject", "erase", "--user-id", "victim", "--vault-only", "--reason", "erasure request DSR-5"], env());
    assert.equal(all.code, 0, all.stderr);
    assert.doesNotMatch(all.stdout, /Nothing of this user was left to erase/);
    for (const [kind, value] of [["ip", "198.51.100.50"], ["device_id", "victim-dev"], ["ip", "198.51.100.52"], ["device_id", "victim-dev-eu"]] as const) {
      assert.ok(!(await vaulted(kind, value)), `${kind} ${value} is erased`);
    }
    assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'victim'"), 2, "vault-only keeps the rows");
    assert.equal(await count("SELECT count(*) AS n FROM public.logins_eu WHERE user_id = 'victim'"), 2, "vault-only keeps the rows");
    assert.equal(await orphans("public.user_logins", "t.user_id = 'bystander'"), 0, "the bystander keeps theirs");
    const unmask = await runMasq(["unmask", "--reason", "checking the erasure", "--user-id", "victim"], env());
    assert.ok(!unmask.stdout.includes("198.51.100.5") && !unmask.stdout.includes("victim-dev"), unmask.stdout);
  });

  test("a batch of an erasure with nothing left does not take the vault epoch", async () => {
    await fx.reset();
    const epoch = async () => (await fx.db.pool.query<{ epoch: string }>("SELECT epoch::text AS epoch FROM masq.vault_epoch")).rows[0]!.epoch;
    const keys = await testKeys(fx.db);
    const now = new Date();
    await commitMessages(fx.db.pool, TABLE, keys, [{ messageId: "e-1", body: login("someone", "198.51.100.60", "someone-dev"), sentAt: now, receivedAt: now }]);
    const before = await epoch();
    for (const mode of [[], ["--vault-only"]]) {
      const r = await runMasq(["subject", "erase", "--user-id", "nobody", ...mode, "--reason", "erasure request DSR-6"], env());
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Nothing of this user was left to erase/);
    }
    assert.equal(await epoch(), before, "no batch took the epoch");
    const erased = await runMasq(["subject", "erase", "--user-id", "someone", "--reason", "erasure request DSR-6"], env());
    assert.equal(erased.code, 0, erased.stderr);
    assert.equal(Number(await epoch()), Number(before) + 1, "one batch with work took it once; the last, finding nothing, did not");
  });
});
