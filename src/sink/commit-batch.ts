import type pg from "pg";
import { DataError } from "../errors.ts";
import type { TableName } from "./table-name.ts";
import { writeBatch, type BatchResult, type Outcome } from "./write-batch.ts";

export interface CommitResult extends BatchResult {
  /** Rows the database refused on their own; they were quarantined as db_rejected instead. */
  rejected: number;
}

/**
 * Commits a batch; when the database rejects it as a whole (a constraint or type the validator did not foresee),
 * splits it in halves until the offending rows are isolated, quarantines those, and commits the rest.
 * A poison row costs O(log n) extra statements, never a stuck pipeline. Transient and fatal errors propagate.
 */
export async function commitBatch(pool: pg.Pool, table: TableName, outcomes: readonly Outcome[]): Promise<CommitResult> {
  try {
    return { ...(await writeBatch(pool, table, outcomes)), rejected: 0 };
  } catch (err) {
    if (!(err instanceof DataError)) throw err;
    if (outcomes.length === 1) return { ...(await writeBatch(pool, table, [asRejected(outcomes[0]!, err)])), rejected: 1 };
    const mid = Math.ceil(outcomes.length / 2);
    const a = await commitBatch(pool, table, outcomes.slice(0, mid));
    const b = await commitBatch(pool, table, outcomes.slice(mid));
    const byReason = { ...a.quarantinedByReason };
    for (const [reason, n] of Object.entries(b.quarantinedByReason)) byReason[reason] = (byReason[reason] ?? 0) + n;
    return {
      written: a.written + b.written,
      quarantined: a.quarantined + b.quarantined,
      quarantinedByReason: byReason,
      duplicates: a.duplicates + b.duplicates,
      rejected: a.rejected + b.rejected,
    };
  }
}

function asRejected(o: Outcome, err: DataError): Outcome {
  if (o.kind === "quarantine") {
    // The quarantine record itself was refused: keep the reason, drop the body that Postgres would not store.
    return { ...o, detail: `${o.detail}; body not kept: ${err.message}`, redactedBody: null };
  }
  const { row, ...meta } = o;
  return {
    ...meta,
    kind: "quarantine",
    reason: "db_rejected",
    detail: err.message,
    // The masked row, not the raw body: it is what the database refused, and it holds no plain PII.
    redactedBody: JSON.stringify(row),
  };
}
