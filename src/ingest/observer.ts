/**
 * What the runner reports as it works, and knows nothing more of: the run's counters (RunStats), the observer that
 * metrics and the progress bar implement (ops/metrics.ts, ops/progress.ts), and when the counters are worth a
 * `progress` log line.
 */
import type { ReasonCode } from "./login-event.ts";
import type { ContractReason } from "../contracts/compile-contract.ts";

/** Counters for one run. They feed the log lines, the demo summary and the end-of-run report. */
export interface RunStats {
  received: number;
  written: number;
  /** On the contract path only: rows written by event type. */
  writtenByEvent?: Record<string, number>;
  /** Newly quarantined messages by reason, as the database recorded them. */
  quarantined: Partial<Record<ReasonCode | ContractReason, number>>;
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

/**
 * What the runner reports as it works, for metrics and progress displays. The runner knows nothing of Prometheus
 * or terminals; ops/metrics.ts and ops/progress.ts implement this. Every method is cheap and called per batch or per
 * receive, never per message.
 */
export interface PipelineObserver {
  received(count: number, oldestSentAt: Date | null): void;
  committed(batch: CommittedBatch): void;
  deleted(count: number): void;
  retried(cause: string): void;
  inFlight(count: number): void;
  visibilityExtended(count: number): void;
}

export interface CommittedBatch {
  size: number;
  seconds: number;
  written: number;
  /** On the contract path only: rows written by event type. */
  writtenByEvent?: Record<string, number>;
  duplicates: number;
  quarantinedByReason: Record<string, number>;
  /** now − SentTimestamp, in seconds, for each message of the batch that has one. */
  lagSeconds: number[];
}

/** Fans one stream of events out to several observers (metrics and a progress bar, say). */
export function combineObservers(...observers: (PipelineObserver | undefined)[]): PipelineObserver | undefined {
  const list = observers.filter((o): o is PipelineObserver => o !== undefined);
  if (list.length <= 1) return list[0];
  return {
    received: (n, oldest) => list.forEach((o) => o.received(n, oldest)),
    committed: (b) => list.forEach((o) => o.committed(b)),
    deleted: (n) => list.forEach((o) => o.deleted(n)),
    retried: (c) => list.forEach((o) => o.retried(c)),
    inFlight: (n) => list.forEach((o) => o.inFlight(n)),
    visibilityExtended: (n) => list.forEach((o) => o.visibilityExtended(n)),
  };
}

/** The `progress` line is considered this often: a busy service logs its counters every 10 s. */
export const PROGRESS_EVERY_MS = 10_000;
/** An idle service (counters unchanged) logs them this often, so a log that stops means masq stopped. */
export const PROGRESS_HEARTBEAT_MS = 300_000;

export interface ProgressLogTiming {
  everyMs: number;
  heartbeatMs: number;
}

/**
 * Decides, at each tick, whether the counters are worth a `progress` line: when anything changed since the last
 * line, or when the heartbeat is due (then marked `heartbeat: true`). Returns the fields to log, or undefined.
 */
export function createProgressLog(
  start: object,
  timing: ProgressLogTiming = { everyMs: PROGRESS_EVERY_MS, heartbeatMs: PROGRESS_HEARTBEAT_MS },
  now: () => number = Date.now,
): (counters: object) => Record<string, unknown> | undefined {
  // The counters as the run started count as logged: "pipeline started" said so.
  let last = JSON.stringify(start);
  let lastAt = now();
  return (counters) => {
    const text = JSON.stringify(counters);
    const changed = text !== last;
    if (!changed && now() - lastAt < timing.heartbeatMs) return undefined;
    last = text;
    lastAt = now();
    return changed ? { ...counters } : { ...counters, heartbeat: true };
  };
}
