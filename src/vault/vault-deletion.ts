import type pg from "pg";
import { classifyPgError } from "../sink/pg-errors.ts";

/**
 * How anything that deletes vault values (subject erasure, retention) stays exact while ingestion runs (migration
 * 009, "the vault epoch"). Each batch is ONE statement calling a SECURITY DEFINER function that
 *   1. first runs `PERFORM masq.advance_vault_epoch()`: it waits for the ingest batches in flight to commit, and
 *      every later one waits for this transaction (and then, if it left values out, is refused and sealed whole);
 *   2. then deletes at most a bounded number of things, each in a later statement of the function (plpgsql takes a
 *      new READ COMMITTED snapshot per statement, which sees every committed row): a vault value only when no row
 *      and no quarantine record uses it;
 *   3. returns one row with a boolean `done` (nothing was left to delete) and its counts.
 * Each call is its own transaction (autocommit), so a kill loses at most the batch in flight and a rerun continues.
 * This function runs such a statement until it reports done, handing each batch's row to `onBatch`.
 */
export async function deleteInBatches<R extends { done: boolean }>(
  pool: pg.Pool,
  statement: { text: string; values: unknown[] },
  onBatch: (row: R) => void,
  signal?: AbortSignal,
): Promise<void> {
  for (;;) {
    signal?.throwIfAborted();
    let row: R | undefined;
    try {
      row = (await pool.query<R>(statement.text, statement.values)).rows[0];
    } catch (err) {
      throw classifyPgError(err);
    }
    if (row === undefined) return;
    onBatch(row);
    if (row.done) return;
  }
}
