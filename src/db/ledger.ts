/**
 * The ingest ledger's upkeep: its day partitions made ahead of time, and dropped once SQS can no longer redeliver their
 * messages.
 */
import type pg from "pg";
// Statements on pg, not kysely: `masq run` imports this file at start (partitions, the periodic ledger prune)
// and must not load kysely there (about 0.2 s; test/unit/start-up-imports.test.ts).
import { classifyPgError } from "./query.ts";

export interface LedgerPrune {
  /** Day partitions dropped whole (ingest_ledger_YYYYMMDD). */
  dropped: string[];
  /** Rows deleted from the default and undated partitions. */
  deleted: number;
}

/**
 * Forgets the message ids older than the given age: the ledger is partitioned by the UTC day of SentTimestamp, and a
 * day's partition is dropped whole once the age has passed since the day ended (masq.prune_ledger,
 * migrations/102_ingest.sql), instead of deleting its rows one by one. Safe because SQS never delivers a message older
 * than its retention period. Creates the next days' partitions too.
 */
export async function pruneLedger(pool: pg.Pool, olderThanSeconds: number): Promise<LedgerPrune> {
  try {
    const { rows } = await pool.query<{ dropped: string[]; deleted: string }>(
      "SELECT dropped, deleted::text AS deleted FROM masq.prune_ledger(make_interval(secs => $1))",
      [olderThanSeconds],
    );
    return { dropped: rows[0]!.dropped, deleted: Number(rows[0]!.deleted) };
  } catch (err) {
    throw classifyPgError(err);
  }
}

/**
 * Creates the ledger's partitions for yesterday to three days ahead (UTC) where missing: a catalog lookup per day when
 * they exist. A batch never waits for this: a day without its partition goes to the default partition.
 */
export async function ensureLedgerPartitions(pool: pg.Pool): Promise<number> {
  try {
    const { rows } = await pool.query<{ n: number }>(
      "SELECT masq.ensure_ledger_partitions((now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 3) AS n",
    );
    return rows[0]!.n;
  } catch (err) {
    throw classifyPgError(err);
  }
}
