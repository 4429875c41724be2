import { startCpuMeter } from "./cpu-meter.ts";
import type { BenchEnv } from "./environment.ts";
import { deleteQueue, fillQueue } from "./fill-queue.ts";
import { context, isDisturbed, measureMasqPhase, measureSqsPhase, otherLoad, quiet, type ComparisonOptions, type MasqMeasurement, type PhaseContext } from "./main-comparison.ts";
import { createPlainTable, runPlainConsumer, type PlainConsumerResult } from "./plain-consumer.ts";
import type { SqsCeilingResult } from "./sqs-ceiling.ts";
import type { Workload } from "./workload.ts";

/** One repetition: the SQS ceiling, a whole `masq run --drain` and the plain consumer on identical queues. */
export interface DrainStartupRun {
  sqsCeiling: SqsCeilingResult & PhaseContext;
  masq: MasqMeasurement;
  /** masq's messages ÷ (spawn to exit) over the ceiling's messages ÷ (first receive to last delete). */
  ratio: number;
  /** The `sqs-consumer` + pg consumer, spawn to exit (plain-consumer.ts); absent in older result files. */
  plainConsumer?: PlainConsumerResult & PhaseContext;
  /** masq's spawn-to-exit rate ÷ the plain consumer's (its seconds ÷ masq's): > 1 when masq is faster. */
  masqOverPlain?: number;
  disturbed: boolean;
}

export interface DrainStartupResult extends DrainStartupRun {
  messages: number;
  /** Every repetition; the fields above are the median undisturbed one (by ratio; plainConsumer and masqOverPlain by masqOverPlain). */
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
    const plainConsumer = await measurePlainPhase(env, w, opts);
    const ratio = masq.wallPerSecond / sqsCeiling.perSecond;
    const masqOverPlain = masq.wallPerSecond / plainConsumer.wallPerSecond;
    const disturbed = o.waitQuiet && isDisturbed(sqsCeiling, masq, plainConsumer);
    if (disturbed) o.log(`  (other work used the machine during this repetition: ${otherLoad(sqsCeiling, masq, plainConsumer)}; it does not count)`);
    o.log(`  → SQS ceiling ${Math.round(sqsCeiling.perSecond).toLocaleString("en-US")} msg/s, masq ${masq.wallSeconds.toFixed(2)} s spawn to exit = ${Math.round(masq.wallPerSecond).toLocaleString("en-US")} msg/s (${ratio.toFixed(2)} × the ceiling)${masq.verification.ok ? "" : " — INCORRECT"}`);
    o.log(`  → sqs-consumer + pg ${plainConsumer.wallSeconds.toFixed(2)} s spawn to exit: masq ÷ it = ${masqOverPlain.toFixed(2)}`);
    runs.push({ sqsCeiling, masq, ratio, plainConsumer, masqOverPlain, disturbed });
  }
  const counted = runs.some((r) => !r.disturbed) ? runs.filter((r) => !r.disturbed) : runs;
  // Each ratio is the median of its own: the repetition whose masq ÷ ceiling is the median need not hold the median masq ÷ plain.
  const plain = median(counted, (r) => r.masqOverPlain ?? 0);
  return { ...median(counted, (r) => r.ratio), plainConsumer: plain.plainConsumer, masqOverPlain: plain.masqOverPlain, disturbed: runs.every((r) => r.disturbed), messages: w.bodies.length, runs, ok: runs.every((r) => r.masq.verification.ok) };
}

/** The `sqs-consumer` + pg consumer on a fresh queue of the same messages, spawn to exit. */
async function measurePlainPhase(env: BenchEnv, w: Workload, o: ComparisonOptions): Promise<PlainConsumerResult & PhaseContext> {
  const admin = env.sqsClient(env.sqs.endpoint, 16);
  try {
    await createPlainTable(env.db.pool);
    o.log(`  sqs-consumer + pg: filling a queue with ${w.bodies.length.toLocaleString("en-US")} messages…`);
    const filled = await fillQueue(admin, "bench-plain", w.bodies);
    const background = await quiet(o);
    o.log("  sqs-consumer + pg: spawn to exit…");
    const meter = startCpuMeter(env.sqs.pid());
    const r = await runPlainConsumer({ endpoint: o.endpoint ?? env.sqs.endpoint, queueUrl: filled.queueUrl, databaseUrl: env.databaseUrl, pool: env.db.pool, bodies: w.bodies });
    // As after masq: its Postgres backends' CPU time reaches the postmaster once they are reaped.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const result = { ...r, ...context(meter, background, w.bodies.length) };
    await deleteQueue(admin, filled.queueUrl);
    return result;
  } finally {
    admin.destroy();
  }
}
