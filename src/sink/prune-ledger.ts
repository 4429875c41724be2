import type pg from "pg";
import { classifyPgError } from "./pg-errors.ts";

/**
 * Deletes ledger rows older than the given age, in chunks so no statement holds locks for long.
 * Safe because SQS never delivers a message older than its retention period.
 */
export async function pruneLedger(pool: pg.Pool, olderThanSeconds: number, chunk = 10_000): Promise<number> {
  let total = 0;
  try {
    for (;;) {
      const res = await pool.query(
        `DELETE FROM masq.ingest_ledger WHERE message_id IN (
           SELECT message_id FROM masq.ingest_ledger WHERE committed_at < now() - make_interval(secs => $1) LIMIT $2)`,
        [olderThanSeconds, chunk],
      );
      total += res.rowCount ?? 0;
      if ((res.rowCount ?? 0) < chunk) return total;
    }
  } catch (err) {
    throw classifyPgError(err);
  }
}
