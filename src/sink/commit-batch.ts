import type pg from "pg";
import { DataError } from "../errors.ts";
import type { TableName } from "./table-name.ts";
import { writeBatch, type BatchResult, type Outcome, type SealedBatch } from "./write-batch.ts";

export interface CommitResult extends BatchResult {
  /** Rows the database refused on their own; they were quarantined as db_rejected instead. */
  rejected: number;
}

/**
 * Commits a batch; when the database rejects it as a whole (a constraint or type the validator did not foresee),
 * splits it in halves until the offending rows are isolated, quarantines those, and commits the rest.
 * A poison row costs O(log n) extra statements, never a stuck pipeline. Transient and fatal errors propagate.
 */
export async function commitBatch(pool: pg.Pool, table: TableName, batch: SealedBatch): Promise<CommitResult> {
  const { outcomes } = batch;
  try {
    return { ...(await writeBatch(pool, table, batch)), rejected: 0 };
  } catch (err) {
    if (!(err instanceof DataError)) throw err;
    // Each part carries the batch's vault rows: they are insert-if-absent, so repeating them costs nothing.
    if (outcomes.length === 1) return { ...(await writeBatch(pool, table, { ...batch, outcomes: [asRejected(outcomes[0]!, err)] })), rejected: 1 };
    const mid = Math.ceil(outcomes.length / 2);
    const a = await commitBatch(pool, table, { ...batch, outcomes: outcomes.slice(0, mid) });
    const b = await commitBatch(pool, table, { ...batch, outcomes: outcomes.slice(mid) });
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
    // The quarantine record itself was refused: keep the reason, drop the bodies that Postgres would not store.
    return { ...o, detail: `${o.detail}; body not kept: ${err.message}`, redactedBody: null, originalBody: null, sealedBody: null };
  }
  const { messageId, sentAt, receivedAt, bodyLength, row } = o;
  return {
    messageId,
    sentAt,
    receivedAt,
    bodyLength,
    kind: "quarantine",
    reason: "db_rejected",
    detail: err.message,
    // The masked row, not the raw body: it is what the database refused and what a replay loads; its originals
    // are in the vault, which this batch writes whatever happens to its rows.
    redactedBody: JSON.stringify(row),
    originalBody: null,
    sealedBody: null,
  };
}
