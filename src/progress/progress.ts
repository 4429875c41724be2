import cliProgress from "cli-progress";
import type { CommittedBatch, PipelineObserver } from "../runner/observer.ts";

/**
 * A progress bar with rate and ETA for long-running commands (run --drain, the demo, replays), drawn on stderr
 * only when both stdout and stderr are terminals. Elsewhere (CI, containers, pipes) it draws nothing: the runner's
 * periodic `progress` log lines carry the same numbers.
 */
export interface Progress extends PipelineObserver {
  /** The work still waiting outside masq (e.g. the queue's visible count), to size the bar. */
  setBacklog(waiting: number): void;
  stop(): void;
}

export function isInteractive(): boolean {
  return process.stdout.isTTY === true && process.stderr.isTTY === true && process.env.CI === undefined;
}

export function createProgress(label: string, opts: { stream?: NodeJS.WriteStream; force?: boolean; unit?: string } = {}): Progress | undefined {
  if (!(opts.force ?? isInteractive())) return undefined;
  // What is counted: messages by default; a key rotation counts values, bodies or table blocks.
  const unit = opts.unit === undefined ? { total: "messages", rate: "msg/s" } : { total: opts.unit, rate: `${opts.unit}/s` };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {percentage}% | {value}/{total} ${unit.total} | {rate} ${unit.rate} | ETA {eta_formatted}`,
      stream: opts.stream ?? process.stderr,
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 50,
      fps: 5,
      ...(opts.force ? { noTTYOutput: true, notTTYSchedule: 200 } : {}),
    },
    cliProgress.Presets.shades_classic,
  );
  const started = performance.now();
  let done = 0;
  let inFlight = 0;
  let backlog = 0;
  bar.start(1, 0, { rate: 0 });
  const update = () => {
    const seconds = (performance.now() - started) / 1000;
    bar.setTotal(Math.max(1, done + inFlight + backlog));
    bar.update(done, { rate: seconds > 0 ? Math.round(done / seconds) : 0 });
  };
  return {
    received: () => undefined,
    committed(b: CommittedBatch) {
      done += b.size;
      update();
    },
    deleted: () => undefined,
    retried: () => undefined,
    inFlight(n: number) {
      inFlight = n;
      update();
    },
    visibilityExtended: () => undefined,
    setBacklog(waiting: number) {
      backlog = waiting;
      update();
    },
    stop() {
      update();
      bar.stop();
    },
  };
}
