import type { CommittedBatch, PipelineObserver } from "../ingest/observer.ts";
import { Estimate } from "./estimate.ts";
import { formatBar } from "./format-bar.ts";
import { LiveLine, terminalLine, type TerminalStream } from "./live-line.ts";

/**
 * A progress bar with rate and ETA for long-running commands (run --drain, the demo, replays, rotations), drawn on
 * stderr only when both stdout and stderr are terminals. Elsewhere (CI, containers, pipes) it draws nothing: the
 * runner's periodic `progress` log lines carry the same numbers.
 */
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
