import type pg from "pg";
import { describeError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { classifyPgError } from "../sink/pg-errors.ts";
import type { TableName } from "../sink/table-name.ts";
import type { KeyProvider } from "../vault/key-provider.ts";
import { endedLine } from "../sink/lock-watch.ts";
import { pruneVault, type PruneCursor } from "./prune-vault.ts";

export interface PeriodicPruneOptions {
  /** A pool of its own (three connections): the advisory lock is held on one for a whole run, never on ingestion's; one watches the deleter's lock waits (lock-watch.ts). */
  pool: pg.Pool;
  provider: KeyProvider;
  table: TableName;
  days: number;
  logger: Logger;
  /** Between runs that reached the end (default an hour). */
  intervalMs?: number;
  /** A run that stopped at its bound goes on after this (default a minute), from where it stopped. */
  continueMs?: number;
  /** Transactions per run (default 100), each of batchSize vault entries or quarantine records (default 1000). */
  maxBatches?: number;
  batchSize?: number;
  /** Between two transactions of a run (default 1 s): ingestion catches up between two epoch advances. */
  pauseMs?: number;
}

/** The advisory lock that makes one masq process of all replicas the one that prunes. */
const LOCK = "hashtext('masq.vault_prune')";

/**
 * `masq run` with MASQ_VAULT_RETENTION_DAYS: prunes at start and then hourly, in runs of a bounded number of small
 * transactions with a pause between them, so that ingestion (whose batches a deleting transaction holds back for its
 * duration, migration 010) is never held up for more than one of them. Across replicas one process prunes at a time
 * (pg_try_advisory_lock; the others skip their turn). A failed run is logged and tried again at the next turn:
 * retention never stops ingestion.
 */
export function startPeriodicPrune(o: PeriodicPruneOptions): { stop(): Promise<void> } {
  const intervalMs = o.intervalMs ?? 3_600_000;
  const continueMs = o.continueMs ?? 60_000;
  const abort = new AbortController();
  let cursor: PruneCursor | undefined;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();

  const schedule = (ms: number) => {
    if (abort.signal.aborted) return;
    timer = setTimeout(() => {
      running = once().then(schedule);
    }, ms);
    timer.unref();
  };

  const once = async (): Promise<number> => {
    let lock: pg.PoolClient | undefined;
    try {
      lock = await o.pool.connect();
      const got = await lock.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(${LOCK}) AS ok`);
      if (got.rows[0]?.ok !== true) {
        o.logger.debug({}, "vault prune: another masq process is pruning; skipping this turn");
        return intervalMs;
      }
      try {
        const r = await pruneVault({
          pool: o.pool,
          provider: o.provider,
          table: o.table,
          days: o.days,
          batchSize: o.batchSize,
          maxBatches: o.maxBatches ?? 100,
          from: cursor,
          signal: abort.signal,
          betweenBatches: () => pause(o.pauseMs ?? 1000, abort.signal),
          onBlockerEnded: (b, what) => o.logger.warn({ pid: b.pid, login: b.login, lock: b.lock }, `vault prune: ${endedLine(b, what)}`),
        });
        cursor = r.cursor;
        o.logger.info(
          { retentionDays: o.days, vaultPruned: r.vaultPruned, quarantinePruned: r.quarantinePruned, scanned: r.scanned, batches: r.batches, complete: r.complete },
          `vault prune: ${r.vaultPruned} vault entries and ${r.quarantinePruned} quarantine records older than ${o.days} days deleted${r.complete ? "" : " (bounded run; continuing shortly)"}`,
        );
        return r.complete ? intervalMs : continueMs;
      } finally {
        await lock.query(`SELECT pg_advisory_unlock(${LOCK})`);
      }
    } catch (err) {
      if (!abort.signal.aborted) o.logger.warn({ err: describeError(classifyPgError(err)) }, "vault prune failed; will try again at the next turn");
      return intervalMs;
    } finally {
      lock?.release();
    }
  };

  schedule(0);
  return {
    async stop() {
      abort.abort();
      clearTimeout(timer);
      await running;
    },
  };
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });
}
