import type { ReasonCode } from "./login-event.ts";

/** Counters for one run. They feed the log lines, the demo summary and the end-of-run report. */
export interface RunStats {
  received: number;
  written: number;
  /** Newly quarantined messages by reason, as the database recorded them. */
  quarantined: Partial<Record<ReasonCode, number>>;
  /** Messages whose id was already in the ledger: redeliveries of committed work, skipped. */
  duplicates: number;
  deleted: number;
  /** Committed messages whose delete kept failing: they will be redelivered and skipped by the ledger. */
  deleteAbandoned: number;
  batches: number;
  visibilityExtended: number;
  staleHandles: number;
  /** Received after a stop began and made visible again at once (not counted as received). */
  givenBack: number;
  retries: Record<string, number>;
}

export function emptyStats(): RunStats {
  return { received: 0, written: 0, quarantined: {}, duplicates: 0, deleted: 0, deleteAbandoned: 0, batches: 0, visibilityExtended: 0, staleHandles: 0, givenBack: 0, retries: {} };
}

export function totalQuarantined(s: RunStats): number {
  return Object.values(s.quarantined).reduce((a, b) => a + (b ?? 0), 0);
}
