import type { BenchEnv } from "./environment.ts";
import { isDisturbed, measureMasqPhase, measureSqsPhase, otherLoad, type ComparisonOptions, type MasqMeasurement, type PhaseContext } from "./main-comparison.ts";
import type { SqsCeilingResult } from "./sqs-ceiling.ts";
import type { Workload } from "./workload.ts";

/** One repetition: the SQS ceiling and a whole `masq run --drain` on identical queues. */
export interface DrainStartupRun {
  sqsCeiling: SqsCeilingResult & PhaseContext;
  masq: MasqMeasurement;
  /** masq's messages ÷ (spawn to exit) over the ceiling's messages ÷ (first receive to last delete). */
  ratio: number;
  disturbed: boolean;
}

export interface DrainStartupResult extends DrainStartupRun {
  messages: number;
  /** Every repetition; the fields above are the median undisturbed one (by ratio). */
  runs: DrainStartupRun[];
  ok: boolean;
}

const median = <T>(items: readonly T[], by: (t: T) => number): T => [...items].sort((a, b) => by(a) - by(b))[Math.floor((items.length - 1) / 2)]!;

/**
 * A short drain as a job runner sees it: `masq run --drain` of a small queue (5,000 messages by default), timed from
 * spawn to exit, so Node's start, loading masq, the migrations check, the drain's end (empty polls, the queue check)
 * and shutdown all count, against the SQS ceiling's rate on an identical queue. Interleaved repetitions, as in the
 * main comparison; masq's log and the ledger say where the time outside the pipeline goes.
 */
export async function runDrainStartup(env: BenchEnv, w: Workload, o: ComparisonOptions & { repeat: number }): Promise<DrainStartupResult> {
  const runs: DrainStartupRun[] = [];
  const opts = { ...o, cpuProfDir: undefined };
  for (let attempt = 0; runs.filter((r) => !r.disturbed).length < o.repeat && attempt < o.repeat * 2; attempt++) {
    o.log(`drain start-up: ${w.bodies.length.toLocaleString("en-US")} messages, spawn to exit (repetition ${attempt + 1}):`);
    const sqsCeiling = await measureSqsPhase(env, w, opts);
    const masq = await measureMasqPhase(env, w, opts);
    const ratio = masq.wallPerSecond / sqsCeiling.perSecond;
    const disturbed = o.waitQuiet && isDisturbed(sqsCeiling, masq);
    if (disturbed) o.log(`  (other work used the machine during this repetition: ${otherLoad(sqsCeiling, masq)}; it does not count)`);
    o.log(`  → SQS ceiling ${Math.round(sqsCeiling.perSecond).toLocaleString("en-US")} msg/s, masq ${masq.wallSeconds.toFixed(2)} s spawn to exit = ${Math.round(masq.wallPerSecond).toLocaleString("en-US")} msg/s (${ratio.toFixed(2)} × the ceiling)${masq.verification.ok ? "" : " — INCORRECT"}`);
    runs.push({ sqsCeiling, masq, ratio, disturbed });
  }
  const counted = runs.some((r) => !r.disturbed) ? runs.filter((r) => !r.disturbed) : runs;
  return { ...median(counted, (r) => r.ratio), disturbed: runs.every((r) => r.disturbed), messages: w.bodies.length, runs, ok: runs.every((r) => r.masq.verification.ok) };
}
