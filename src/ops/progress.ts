/**
 * A progress bar with rate and ETA for long-running commands (run --drain, the demo, replays, rotations), drawn on
 * stderr only when both stdout and stderr are terminals. Elsewhere (CI, containers, pipes) it draws nothing: the
 * runner's periodic `progress` log lines carry the same numbers. The estimate and the bar's text are pure (the caller
 * passes the time); the live line is the terminal's last line, which log lines are written above (log.ts).
 */
import type { CommittedBatch, PipelineObserver } from "../ingest/observer.ts";

/** What a long-running command reports its work to; the runner's observer events drive it as well. */
export interface Progress extends PipelineObserver {
  /** At least this much work is still waiting outside masq: the total grows to cover it, never shrinks. */
  setBacklog(waiting: number): void;
  /** The queue's own counts, read when deletedThen messages had been deleted: the total covers all it held. */
  queueCounts(counts: { visible: number; inFlight: number; delayed: number }, deletedThen: number): void;
  /** Messages deleted so far, to pass back with the next queueCounts(). */
  deleted(count: number): void;
  deletedSoFar(): number;
  /** The final drawing (with complete: total = done), then a newline: what follows prints below, and it is never redrawn. */
  stop(opts?: { complete?: boolean }): void;
}

export function isInteractive(): boolean {
  return process.stdout.isTTY === true && process.stderr.isTTY === true && process.env.CI === undefined;
}

/** Redraw at most this often on updates, and at least this often for the rate and the ETA. */
const DRAW_EVERY_MS = 100;
const TICK_MS = 1_000;

export function createProgress(
  label: string,
  opts: { stream?: TerminalStream; line?: LiveLine; force?: boolean; unit?: string; total?: number; now?: () => number } = {},
): Progress | undefined {
  if (!(opts.force ?? isInteractive())) return undefined;
  // What is counted: messages by default; a key rotation counts values, bodies or table blocks.
  const unit = opts.unit === undefined ? { total: "messages", rate: "msg/s" } : { total: opts.unit, rate: `${opts.unit}/s` };
  const line = opts.line ?? (opts.stream ? new LiveLine(opts.stream) : terminalLine);
  const now = opts.now ?? (() => performance.now());
  const estimate = new Estimate(opts.total ?? 0, now());
  let deleted = 0;
  let stopped = false;
  let drawnAt = -Infinity;
  const draw = (force = false) => {
    if (stopped) return;
    const t = now();
    if (!force && t - drawnAt < DRAW_EVERY_MS) return;
    drawnAt = t;
    line.draw(formatBar(label, estimate.snapshot(t), unit, line.columns));
  };
  const tick = setInterval(() => draw(true), TICK_MS);
  tick.unref();
  draw(true);
  return {
    received: () => undefined,
    committed(b: CommittedBatch) {
      estimate.add(b.size, now());
      draw();
    },
    deleted(count: number) {
      deleted += count;
    },
    deletedSoFar: () => deleted,
    retried: () => undefined,
    inFlight(count: number) {
      // Held means received and not yet deleted, so held + deleted counts each message once (done + held would
      // count the committed-but-not-deleted ones twice).
      estimate.atLeast(deleted + count);
      draw();
    },
    visibilityExtended: () => undefined,
    setBacklog(waiting: number) {
      estimate.atLeast(estimate.doneCount + waiting);
      draw();
    },
    queueCounts(c, deletedThen) {
      estimate.atLeast(deletedThen + c.visible + c.inFlight + c.delayed);
      draw();
    },
    stop(o = {}) {
      if (stopped) return;
      clearInterval(tick);
      if (o.complete) estimate.finish();
      draw(true);
      stopped = true;
      line.end();
    },
  };
}

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

const n = (v: number) => Math.round(v).toLocaleString("en-US");

/** "4s", "3m 05s", "1h 02m"; "--" while there is no rate to go by. */
export function formatEta(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return "--";
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * One line, never wider than the terminal (a wrapped line cannot be redrawn in place):
 *   draining [██████████░░░░░░░░░░] 52% | 26,000/50,000 messages | 4,210 msg/s | ETA 6s
 * The bar shrinks first; below a usable width, the text is cut.
 */
export function formatBar(label: string, s: Snapshot, unit: { total: string; rate: string }, columns: number): string {
  const fraction = s.total > 0 ? Math.min(1, s.done / s.total) : 0;
  const text = ` ${Math.floor(fraction * 100)}% | ${n(s.done)}/${n(s.total)} ${unit.total} | ${n(s.rate)} ${unit.rate} | ETA ${formatEta(s.etaSeconds)}`;
  const room = columns - 1 - label.length - 3 - text.length;
  const width = Math.min(30, room);
  if (width < 5) return `${label}${text}`.slice(0, Math.max(0, columns - 1));
  const filled = Math.round(fraction * width);
  return `${label} [${"█".repeat(filled)}${"░".repeat(width - filled)}]${text}`;
}

/**
 * The one line at the bottom of a terminal that a progress bar redraws in place. Everything else written while it is
 * up (log lines, on stdout or stderr: the same terminal) goes through above(): the line is cleared, the text written,
 * the line drawn again below it, so no log line is ever glued onto the bar. Writes to a terminal are synchronous in
 * Node, so the order on screen is the order of the calls.
 */
export interface TerminalStream {
  write(text: string): unknown;
  columns?: number;
}

const CLEAR = "\r\x1b[K";

export class LiveLine {
  private text: string | undefined;
  private readonly stream: TerminalStream;

  constructor(stream: TerminalStream) {
    this.stream = stream;
  }

  get columns(): number {
    // A pseudo-terminal nobody sized (script, docker exec without -t size) reports 0 columns.
    return this.stream.columns || 80;
  }

  get active(): boolean {
    return this.text !== undefined;
  }

  draw(text: string): void {
    this.text = text;
    this.stream.write(`${CLEAR}${text}`);
  }

  above(write: () => void): void {
    if (this.text === undefined) return write();
    this.stream.write(CLEAR);
    write();
    this.stream.write(this.text);
  }

  /** Leaves the last drawing on screen and moves below it: what is written next starts on a line of its own. */
  end(): void {
    if (this.text === undefined) return;
    this.stream.write("\n");
    this.text = undefined;
  }
}

/** The live line of this process: the bar draws on stderr, and the logger writes above it. */
export const terminalLine = new LiveLine(process.stderr);

// A process that exits with a bar still up (a fatal error) must not leave the shell prompt on the bar's line.
process.once("exit", () => terminalLine.end());
