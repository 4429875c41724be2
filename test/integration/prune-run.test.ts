import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { commitMessages } from "../../src/ingest/commit-batch.ts";
import { startPeriodicPrune, pruneVault } from "../../src/lifecycle/retention.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { createLoginRoles } from "../helpers/login-roles.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { captureLogger, TABLE, TEST_MASTER_KEY, testKeys, waitFor } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";

const DAY = 86_400_000;
const event = (user: string, ip: string, device: string) => JSON.stringify({ user_id: user, app_version: "2.3.0", device_type: "ios", ip, locale: "en", device_id: device });

/** Retention as `masq run` applies it, while ingestion runs; and `masq status`. */
describe("retention while masq runs", () => {
  const fx = usePipelineFixture();
  const provider = () => new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY));

  /** `count` rows 100 days old, each with its own ip and device (so 2 × count prunable vault entries). */
  const oldRows = async (count: number, prefix = "old") => {
    const keys = await testKeys(fx.db);
    const at = new Date(Date.now() - 100 * DAY);
    const messages = Array.from({ length: count }, (_, i) => ({ messageId: `${prefix}-${i}`, body: event(`u-${i}`, `10.1.${i >> 8}.${i & 255}`, `${prefix}-dev-${i}`), sentAt: at, receivedAt: at }));
    await commitMessages(fx.db.pool, TABLE, keys, messages);
    return keys;
  };

  const orphans = async () =>
    (
      await fx.db.pool.query(
        `SELECT 1 FROM public.user_logins t WHERE
           NOT EXISTS (SELECT 1 FROM masq.vault v WHERE v.kind = 'ip' AND v.pseudonym = t.masked_ip) OR
           NOT EXISTS (SELECT 1 FROM masq.vault v WHERE v.kind = 'device_id' AND v.pseudonym = t.masked_device_id)`,
      )
    ).rowCount;

  test("prune concurrent with ingestion of the same values leaves every row recoverable", async () => {
    await fx.reset();
    // The same IngestKeys for old and new rows: its sealer remembers the old values as committed and leaves them
    // out of later batches. Only the vault epoch makes those batches seal them again once prune deleted them.
    const keys = await oldRows(300);
    const now = new Date();
    let stop = false;
    let pruned = 0;
    const ingest = (async () => {
      for (let round = 0; round < 15; round++) {
        // The rounds after the first wait for a prune to have deleted values they use again: without the wait, a fast
        // ingestion could re-use every value before the first prune deleted any, and nothing would be tested (seen).
        if (round === 1) await waitFor(() => pruned > 0, 60_000, "a prune during ingestion");
        const messages = Array.from({ length: 20 }, (_, j) => {
          const i = (round * 20 + j) % 300;
          return { messageId: `new-${round}-${j}`, body: event(`u-${i}`, `10.1.${i >> 8}.${i & 255}`, `old-dev-${i}`), sentAt: now, receivedAt: now };
        });
        await commitMessages(fx.db.pool, TABLE, keys, messages);
      }
      stop = true;
    })();
    while (!stop) pruned += (await pruneVault({ pool: fx.db.pool, provider: provider(), table: TABLE, days: 30, batchSize: 50 })).vaultPruned;
    await ingest;
    pruned += (await pruneVault({ pool: fx.db.pool, provider: provider(), table: TABLE, days: 30 })).vaultPruned;
    assert.ok(pruned > 0, "prune deleted something while ingestion ran");
    assert.equal(await orphans(), 0, "every row, old or new, has both its values");
    // What remains is exactly the values the new rows use (each used by a row of today).
    const remaining = await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.vault");
    const used = await fx.db.pool.query<{ n: number }>(
      "SELECT (count(DISTINCT masked_ip) + count(DISTINCT masked_device_id))::int AS n FROM public.user_logins WHERE create_date >= current_date - 30",
    );
    assert.equal(remaining.rows[0]!.n, used.rows[0]!.n);
  });

  test("the periodic prune runs in bounded runs and continues where it stopped; one process of several prunes", async () => {
    await fx.reset();
    await oldRows(10, "bounded");
    const { logger, lines } = captureLogger("debug");
    const a = startPeriodicPrune({ pool: fx.db.pool, provider: provider(), table: TABLE, days: 30, logger, maxBatches: 3, batchSize: 4, pauseMs: 0, continueMs: 10 });
    try {
      await waitFor(() => lines.filter((l) => l.includes('"complete":true')).length > 0, 60_000, "a complete prune run");
    } finally {
      await a.stop();
    }
    const runs = lines.filter((l) => l.includes("vault prune:")).map((l) => JSON.parse(l) as { batches: number; complete: boolean; vaultPruned: number; quarantinePruned: number });
    assert.ok(runs.length >= 2, lines.join("\n"));
    assert.ok(runs.every((r) => r.batches <= 3));
    assert.equal(runs[0]!.complete, false);
    assert.equal(runs.reduce((s, r) => s + r.vaultPruned, 0), 20);
    assert.equal((await fx.db.pool.query("SELECT 1 FROM masq.vault")).rowCount, 0);

    // While one process holds the prune lock, another skips its turn.
    const holder = await fx.db.pool.connect();
    try {
      await holder.query("SELECT pg_advisory_lock(hashtext('masq.vault_prune'))");
      const other = captureLogger("debug");
      const b = startPeriodicPrune({ pool: fx.db.pool, provider: provider(), table: TABLE, days: 30, logger: other.logger });
      await waitFor(() => other.lines.some((l) => l.includes("another masq process is pruning")), 30_000, "a skipped turn");
      await b.stop();
      assert.ok(!other.lines.some((l) => l.includes("vaultPruned")));
    } finally {
      await holder.query("SELECT pg_advisory_unlock(hashtext('masq.vault_prune'))");
      holder.release();
    }
  });

  test("masq run prunes at start when MASQ_VAULT_RETENTION_DAYS is set (log line), and refuses a login without masq_erase", async () => {
    await fx.reset();
    await oldRows(5, "run");
    const queueUrl = fx.sqs.newQueue();
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { MASQ_VAULT_RETENTION_DAYS: "30" } });
    const proc = spawnMasq(["run"], env);
    try {
      await waitFor(() => proc.lines.some((l) => l.includes("vault prune:")), 60_000, "the prune log line");
    } finally {
      proc.child.kill("SIGTERM");
      await proc.exited;
    }
    const line = JSON.parse(proc.lines.find((l) => l.includes("vault prune:"))!) as { vaultPruned: number; retentionDays: number };
    assert.equal(line.vaultPruned, 10);
    assert.equal(line.retentionDays, 30);
    assert.equal((await fx.db.pool.query("SELECT 1 FROM masq.vault")).rowCount, 0);

    const roles = await createLoginRoles(fx.db.pool, fx.pgdb.url);
    try {
      const r = spawnMasq(["run"], { ...env, DATABASE_URL: roles.url.service });
      const exit = await r.exited;
      assert.equal(exit.code, 2, r.lines.join("\n"));
      assert.ok(r.lines.some((l) => /^masq: .*\(MASQ_VAULT_RETENTION_DAYS\): .*masq_erase/.test(l)), r.lines.join("\n"));
    } finally {
      await roles.drop();
    }
  });

  test("masq status shows the oldest recoverable value's age and the retention period", async () => {
    await fx.reset();
    await oldRows(2, "status");
    await fx.db.pool.query("UPDATE masq.vault SET created_at = now() - interval '40 days' WHERE pseudonym = (SELECT min(pseudonym) FROM masq.vault)");
    const env = { DATABASE_URL: fx.pgdb.url, MASQ_LOG_LEVEL: "silent", MASQ_VAULT_RETENTION_DAYS: "30" };
    const r = await runMasq(["status"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /oldest value stored \S+ \(40 days ago\); retention 30 days/);
    const j = await runMasq(["status", "--json"], { ...env, MASQ_VAULT_RETENTION_DAYS: undefined });
    const s = JSON.parse(j.stdout) as { retentionDays: number | null; database: { vault: { oldestValueAt: string } } };
    assert.equal(s.retentionDays, null);
    assert.ok(Date.now() - Date.parse(s.database.vault.oldestValueAt) >= 40 * DAY - 60_000);
  });
});
