import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";
import pg from "pg";
import { commitMessages } from "../../src/ingest/commit-batch.ts";
import type { IncomingMessage } from "../../src/ingest/batch.ts";
import { prepareOutcome } from "../../src/ingest/prepare.ts";
import { StaleKeyError, writeBatch } from "../../src/ingest/write-batch.ts";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { activePseudonymKey, pseudonymKeyContext, pseudonymKeyFingerprint } from "../../src/keys/pseudonym-keys.ts";
import { prepareDatabase } from "../../src/db/prepare-database.ts";
import { ConfigError } from "../../src/errors.ts";
import { createLogger } from "../../src/log.ts";
import { createDb } from "../../src/db/pool.ts";
import { createTestDatabase } from "../helpers/postgres.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { TABLE, TEST_KEY, TEST_MASTER_KEY, testKeys, uniqueEvents } from "../helpers/pipeline.ts";

/**
 * The protocol that lets a pseudonym key rotation run while ingestion keeps writing: a batch commits only under the
 * active key, holding a share lock on that key's row until it commits, so the rotation's switch waits for batches in
 * flight and every later batch sees the new key.
 */
describe("the pseudonym key guard", () => {
  const fx = usePipelineFixture();

  const messages = (n: number, seed: number): IncomingMessage[] => {
    const now = new Date();
    return uniqueEvents(n, seed, 0).map((e) => ({ messageId: randomUUID(), body: e.body, sentAt: now, receivedAt: now }));
  };

  test("a batch under a key that is not the active one writes nothing at all", async () => {
    await fx.reset();
    const keys = await testKeys(fx.db, { pseudonymKey: null });
    try {
      const outcomes = messages(20, 1).map((m) => prepareOutcome(m, keys.pseudonym.pseudonymizer));
      const sealed = await keys.sealer.seal(outcomes, keys.pseudonym.version);
      await assert.rejects(writeBatch(fx.db.pool, TABLE, { ...sealed, keyVersion: keys.pseudonym.version + 1 }), StaleKeyError);
      const n = await fx.db.pool.query<{ ledger: number; rows: number; vault: number }>(
        "SELECT (SELECT count(*) FROM masq.ingest_ledger)::int AS ledger, (SELECT count(*) FROM public.user_logins)::int AS rows, (SELECT count(*) FROM masq.vault)::int AS vault",
      );
      assert.deepEqual(n.rows[0], { ledger: 0, rows: 0, vault: 0 });
    } finally {
      keys.close();
    }
  });

  test("a switch to a new key waits for the batch holding the old one, and the next batch is masked again under the new key", async () => {
    await fx.reset();
    const keys = await testKeys(fx.db, { pseudonymKey: null });
    const version = keys.pseudonym.version;
    const holder = new pg.Client({ connectionString: fx.pgdb.url });
    const switcher = new pg.Client({ connectionString: fx.pgdb.url });
    await holder.connect();
    await switcher.connect();
    try {
      // A batch in flight: its transaction holds the guard.
      await holder.query("BEGIN");
      assert.equal((await holder.query<{ ok: boolean }>("SELECT masq.lock_pseudonym_key($1) AS ok", [version])).rows[0]!.ok, true);
      await switcher.query("SET lock_timeout = '300ms'");
      await assert.rejects(switcher.query("UPDATE masq.pseudonym_keys SET state = 'retiring' WHERE version = $1", [version]), /lock timeout/);
      await holder.query("COMMIT");

      // With the batch committed, the switch goes through: the old key retires, a new one becomes active.
      const provider = new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY));
      const next = await provider.generateKey(pseudonymKeyContext(version + 1));
      await switcher.query("RESET lock_timeout");
      await switcher.query("BEGIN");
      await switcher.query("UPDATE masq.pseudonym_keys SET state = 'retiring' WHERE version = $1", [version]);
      await switcher.query("INSERT INTO masq.pseudonym_keys (version, state, provider, master_key_id, wrapped, fingerprint) VALUES ($1, 'active', 'local', $2, $3, $4)", [
        version + 1,
        next.masterKeyId,
        Buffer.from(next.wrapped),
        pseudonymKeyFingerprint(next.plaintext),
      ]);
      await switcher.query("COMMIT");
      provider.close();

      // Ingestion still holds the old key: its batch is refused, reloaded and masked again under the new one.
      const batch = messages(50, 2);
      const r = await commitMessages(fx.db.pool, TABLE, keys, batch);
      assert.equal(r.written, 50);
      assert.equal(keys.pseudonym.version, version + 1);
      const fresh = createPseudonymizer(next.plaintext);
      const first = JSON.parse(batch[0]!.body) as { user_id: string; ip: string; device_id: string };
      const row = await fx.db.pool.query<{ masked_device_id: string }>("SELECT masked_device_id FROM public.user_logins WHERE user_id = $1", [first.user_id]);
      assert.equal(row.rows[0]!.masked_device_id, fresh.pseudonymize("device_id", first.device_id));
      const versions = await fx.db.pool.query<{ key_version: number }>("SELECT DISTINCT key_version FROM masq.vault");
      assert.deepEqual(versions.rows, [{ key_version: version + 1 }]);
    } finally {
      keys.close();
      await holder.end();
      await switcher.end();
    }
  });

  test("vault rows are inserted in key order whatever order the batch holds them in (so batches sharing values cannot deadlock)", async () => {
    await fx.reset();
    const keys = await testKeys(fx.db, { pseudonymKey: null });
    try {
      const sealed = await keys.sealer.seal(messages(200, 4).map((m) => prepareOutcome(m, keys.pseudonym.pseudonymizer)), keys.pseudonym.version);
      await writeBatch(fx.db.pool, TABLE, { ...sealed, vault: [...sealed.vault].reverse() });
      // Into an empty table, tuples land in insertion order: the physical order is the order of insertion.
      const inserted = await fx.db.pool.query<{ k: string }>("SELECT kind || ' ' || pseudonym AS k FROM masq.vault ORDER BY ctid");
      const keysInOrder = inserted.rows.map((r) => r.k);
      assert.ok(keysInOrder.length > 20, `${keysInOrder.length} values`);
      assert.deepEqual(keysInOrder, [...keysInOrder].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    } finally {
      keys.close();
    }
  });

  test("concurrent batches that share values neither deadlock nor store a value twice", async () => {
    await fx.reset();
    const keys = await testKeys(fx.db, { pseudonymKey: null });
    try {
      const shared = messages(1500, 3);
      // The same values in opposite orders, committed at the same time, many times over.
      for (let round = 0; round < 8; round++) {
        const fresh = (ms: IncomingMessage[]) => ms.map((m) => ({ ...m, messageId: randomUUID() }));
        const a = await keys.sealer.seal(fresh(shared).map((m) => prepareOutcome(m, keys.pseudonym.pseudonymizer)), keys.pseudonym.version);
        const b = await keys.sealer.seal(fresh([...shared].reverse()).map((m) => prepareOutcome(m, keys.pseudonym.pseudonymizer)), keys.pseudonym.version);
        const [ra, rb] = await Promise.all([writeBatch(fx.db.pool, TABLE, a), writeBatch(fx.db.pool, TABLE, b)]);
        assert.equal(ra.written + rb.written, 3000);
      }
      const v = await fx.db.pool.query<{ n: number; distinct: number }>(
        "SELECT (SELECT count(*) FROM masq.vault)::int AS n, (SELECT count(DISTINCT masked_ip) + count(DISTINCT masked_device_id) FROM public.user_logins)::int AS distinct",
      );
      assert.equal(v.rows[0]!.n, v.rows[0]!.distinct);
    } finally {
      keys.close();
    }
  });

  test("a database masq wrote before it kept its own key: without MASQ_PSEUDONYM_KEY it refuses instead of starting a second key", async () => {
    const pgdb = await createTestDatabase();
    const db = createDb({ databaseUrl: pgdb.url });
    try {
      await prepareDatabase(db, TABLE, { migrate: true, logger: createLogger("silent") });
      await db.pool.query("INSERT INTO masq.ingest_ledger (message_id, outcome) VALUES ('m-before-the-vault', 'written')");
      const provider = new LocalKeyProvider(TEST_MASTER_KEY);
      await assert.rejects(
        activePseudonymKey(db.pool, provider),
        (err: Error) => err instanceof ConfigError && err.setting === "MASQ_PSEUDONYM_KEY" && /already holds messages masked under a key/.test(err.message),
      );
      assert.equal((await db.pool.query("SELECT 1 FROM masq.pseudonym_keys")).rowCount, 0, "no key was made");
      // With the key it was written with, masq goes on (and records that key's fingerprint).
      const key = await activePseudonymKey(db.pool, provider, TEST_KEY);
      assert.equal(key.version, 1);
    } finally {
      await db.close();
      await pgdb.close();
    }
  });
});
