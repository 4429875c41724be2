/**
 * What the runner reports as it works, for metrics and progress displays. The runner knows nothing of Prometheus
 * or terminals; src/metrics/ and src/progress/ implement this. Every method is cheap and called per batch or per
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
