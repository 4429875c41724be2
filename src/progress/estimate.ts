/**
 * What a progress bar shows, from what was done and what the work source said it held: a total that only grows
 * (starting from what was there at the start, growing when more arrives), a rate over the last few seconds and an ETA
 * from it. Pure: the caller passes the time, so tests need no clock.
 */
export interface Snapshot {
  done: number;
  total: number;
  /** Units per second over the recent window; 0 until two samples are apart in time. */
  rate: number;
  /** Seconds left at the recent rate; undefined while there is no rate to go by. */
  etaSeconds: number | undefined;
}

/** Rate over this window: long enough to smooth batch-sized steps, short enough to follow a slowdown. */
const WINDOW_MS = 10_000;

export class Estimate {
  private done = 0;
  private total: number;
  private readonly samples: { at: number; done: number }[] = [];
  private readonly startedAt: number;
  private lastAddAt: number;

  constructor(initialTotal: number, now: number) {
    this.total = Math.max(0, initialTotal);
    this.samples.push({ at: now, done: 0 });
    this.startedAt = now;
    this.lastAddAt = now;
  }

  /** Work finished (committed, rewritten, replayed). */
  add(n: number, now: number): void {
    this.done += n;
    this.lastAddAt = now;
    this.samples.push({ at: now, done: this.done });
    while (this.samples.length > 2 && this.samples[1]!.at <= now - WINDOW_MS) this.samples.shift();
    this.total = Math.max(this.total, this.done);
  }

  /**
   * At least this much work exists in all (what is done, held or still waiting, as the caller counts it): the total
   * only grows. Callers must not add up overlapping counts (committed messages are held until deleted).
   */
  atLeast(total: number): void {
    this.total = Math.max(this.total, total);
  }

  /** The work is over: whatever was estimated, the total is what was done. */
  finish(): void {
    this.total = this.done;
  }

  get doneCount(): number {
    return this.done;
  }

  snapshot(now: number): Snapshot {
    const first = this.samples[0]!;
    const seconds = (now - first.at) / 1000;
    const left = this.total - this.done;
    let rate = seconds > 0.5 ? (this.done - first.done) / seconds : 0;
    // Work finished inside the first half second has no window to measure: its rate is what it did from start to end.
    if (rate === 0 && left <= 0 && this.lastAddAt > this.startedAt) rate = this.done / ((this.lastAddAt - this.startedAt) / 1000);
    const etaSeconds = left <= 0 ? 0 : rate > 0 ? left / rate : undefined;
    return { done: this.done, total: this.total, rate, etaSeconds };
  }
}
