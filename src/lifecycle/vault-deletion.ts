import type pg from "pg";
import { TransientError } from "../errors.ts";
import { watchedQuery, type Blocker } from "../sink/lock-watch.ts";

/**
 * How anything that deletes vault values (subject erasure, retention) stays exact while ingestion runs (migration
 * 009, "the vault epoch"). Each batch is ONE statement calling a SECURITY DEFINER function that
 *   1. first runs `PERFORM masq.advance_vault_epoch()`: it waits for the ingest batches in flight to commit, and
 *      every later one waits for this transaction (and then, if it left values out, is refused and sealed whole);
 *   2. then deletes at most a bounded number of things, each in a later statement of the function (plpgsql takes a
 *      new READ COMMITTED snapshot per statement, which sees every committed row): a value is deleted only when no row
 *      and no quarantine record uses it;
 *   3. returns one row with a boolean `done` (nothing was left to delete) and its counts.
 * Each call is its own transaction (autocommit), so a kill loses at most the batch in flight and a rerun continues,
 * and no transaction stays open between two statements. This function runs such a statement until it reports done,
 * handing each batch's row to `onBatch`.
 */
export async function deleteInBatches<R extends { done: boolean }>(
  pool: pg.Pool,
  statement: { text: string; values: unknown[] },
  onBatch: (row: R) => void,
  signal?: AbortSignal,
  onBlockerEnded?: (b: Blocker, what: string) => void,
): Promise<void> {
  for (;;) {
    signal?.throwIfAborted();
    const row = await retryEpochLock(
      async () => (await watchedQuery<R>(pool, { what: DELETER_WAITS, onEnded: onBlockerEnded }, statement.text, statement.values, DELETER_STATEMENT_MS)).rows[0],
      signal,
    );
    if (row === undefined) return;
    onBatch(row);
    if (row.done) return;
  }
}

/**
 * How long one deleting batch may run, holding the vault epoch against ingestion: ingestion waits for a deleter that
 * is still working (migration 018) up to 60 s before its batch fails and is retried, so a batch must end well within
 * that. A batch that runs out fails the command (run it again: it goes on where it stopped).
 */
export const DELETER_STATEMENT_MS = 30_000;

/** What a deleting statement waits for: the vault epoch first, then the rows it deletes. */
export const DELETER_WAITS = "the vault epoch or a record being deleted";

/** lock_not_available: the deleter's bounded wait for the vault epoch (migration 009, lock_timeout) ran out. */
const LOCK_TIMEOUT = "pg_55P03";

/** How often, and after what pauses, a deleter asks for the vault epoch again: about 3 minutes in all. */
export const EPOCH_RETRY = { attempts: 30, firstPauseMs: 100, maxPauseMs: 5000 };

/**
 * Runs one deleting transaction, again after a pause when its wait for the vault epoch timed out. The pause lets the
 * ingest batches that queued behind the deleter through (they wait while it waits): ingestion is held up for at most
 * one lock_timeout at a time. What keeps the epoch locked for minutes is a transaction left open (an idle ingest or
 * replay session): the error then says so.
 */
export async function retryEpochLock<T>(fn: () => Promise<T>, signal?: AbortSignal, retry = EPOCH_RETRY): Promise<T> {
  let pause = retry.firstPauseMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof TransientError) || err.cause_ !== LOCK_TIMEOUT) throw err;
      if (attempt >= retry.attempts) {
        // Already told as who holds the lock (lock-watch.ts): that says more than the epoch's name.
        if (err.help.what?.includes(" is held by ")) throw err;
        throw new TransientError(err.message, LOCK_TIMEOUT, {
          what: "the vault epoch stayed locked",
          object: "masq.vault_epoch",
          hint:
            "a transaction that took it is still open (pg_stat_activity: state 'idle in transaction'; pg_blocking_pids()); masq ends only sessions " +
            "of masq roles (SECURITY.md, \"Waits\"): end it and run this again: it goes on where it stopped",
        });
      }
    }
    signal?.throwIfAborted();
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, retry.maxPauseMs);
  }
}
