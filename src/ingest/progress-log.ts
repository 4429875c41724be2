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
