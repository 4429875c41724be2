import path from "node:path";
import { startCpuMeter, waitForQuiet } from "./cpu-meter.ts";
import { TABLE, type BenchEnv } from "./environment.ts";
import { deleteQueue, fillQueue } from "./fill-queue.ts";
import { runMasq, type MasqRunResult } from "./masq-e2e.ts";
import { measurePgCeiling, type PgCeilingResult } from "./pg-ceiling.ts";
import type { MemoryLimit } from "./memory-limit.ts";
import { runSqsCeilingProcess, type CeilingClient, type SqsCeilingResult } from "./sqs-ceiling.ts";
import { measureSteadyLag, type SteadyLagResult } from "./steady-lag.ts";
import { commitLag, verifyRun, type Verification } from "./verify.ts";
import { threadCpuPerMessage, type ThreadCpu } from "./usage.ts";
import { BENCH_KEY, makeWorkload, presealedBatches, type Workload } from "./workload.ts";

export interface PhaseContext {
  /** Busy share of the machine in the second before the phase started (work that is not the benchmark's). */
  backgroundBusy: number | null;
  /** Busy share of all cores during the phase. */
  machineBusy: number | null;
  /** Busy share of all cores during the phase spent by processes that are not the benchmark's. */
  otherBusy: number | null;
  /** CPU time of the SQS server process per message, µs. */
  sqsServerCpuUsPerMessage: number | null;
  /** CPU time of the (embedded) Postgres server per message, µs; null with an external Postgres. */
  postgresCpuUsPerMessage: number | null;
}

export interface MasqMeasurement extends PhaseContext {
  /** Messages per second from "pipeline started" to the last commit: the rate of the pipeline itself. */
  perSecond: number;
  seconds: number;
  /** Messages per second from spawn to exit (Node start-up, migrations check and drain detection included). */
  wallPerSecond: number;
  wallSeconds: number;
  /** CPU time (user + system) of the masq process per message, µs, start-up included. */
  cpuUsPerMessage: number;
  cpuUserMs: number;
  cpuSystemMs: number;
  /** CPU µs per message of each of masq's threads (and "other": libuv, GC helpers); null from a masq that does not report them. */
  threads: ThreadCpu[] | null;
  maxRssMb: number;
  /** Resident set size over the run, [seconds since spawn, MB] (masq-e2e.ts); absent in older result files. */
  rssSamples?: [number, number][];
  /** Spawn to the "pipeline started" line: Node's start, loading masq, migrations check, keys; the receivers start then. */
  startupSeconds: number;
  /** Spawn to the first batch's commit (ledger committed_at). */
  firstCommitSeconds: number;
  /** The last commit to masq's exit: the last deletes, the drain's empty polls and queue check, shutdown. */
  tailSeconds: number;
  /** The last commit to the drain's "queue is empty" line (null if masq did not log it). */
  drainDetectSeconds: number | null;
  /** End-to-end lag: ledger commit minus send, per message. */
  lagP50Ms: number;
  lagP99Ms: number;
  lagMaxMs: number;
  stats: MasqRunResult["stats"];
  verification: Verification;
}

/** One repetition: the phases back to back. */
export interface ComparisonRun {
  sqsCeiling: SqsCeilingResult & PhaseContext;
  /** The ceiling's loop on a minimal SigV4 client instead of the SDK (wire-source.ts); absent in older result files. */
  wireFloor?: SqsCeilingResult & PhaseContext;
  pgCeiling: PgCeilingResult & PhaseContext;
  masq: MasqMeasurement;
  /** masq ÷ min(SQS ceiling, Postgres ceiling) in this repetition. */
  ratio: number;
  /** Other work took more than DISTURBED of the machine during a phase: not counted in the medians. */
  disturbed: boolean;
}

export interface ComparisonResult extends ComparisonRun {
  messages: number;
  receivers: number;
  batchSize: number;
  writers: number;
  /**
   * Every repetition. The summary fields above are the median undisturbed repetition of each phase (by messages per
   * second); ratio is the median of their ratios; masq.maxRssMb is the largest of any repetition.
   */
  runs: ComparisonRun[];
  /** End-to-end lag of a running masq fed at a steady rate below its capacity (no backlog); null if skipped. */
  steadyLag: SteadyLagResult | null;
  ok: boolean;
}

export interface ComparisonOptions {
  receivers: number;
  batchSize: number;
  writers: number;
  cpuProfDir?: string | undefined;
  /** Another checkout's bin/masq (A/B); default this checkout's. */
  masqBin?: string | undefined;
  nodeOptions?: string | undefined;
  memoryLimit?: MemoryLimit | undefined;
  /** SQS endpoint masq and the ceiling talk to (a latency proxy in latency mode); default the server itself. */
  endpoint?: string;
  /** Wait for the machine to be nearly idle before each phase (off for the smoke run, which measures nothing). */
  waitQuiet: boolean;
  log: (line: string) => void;
}

const KEY = BENCH_KEY;

export const quiet = (o: ComparisonOptions) => (o.waitQuiet ? waitForQuiet() : Promise.resolve(null));

export function context(end: ReturnType<typeof startCpuMeter>, backgroundBusy: number | null, messages: number): PhaseContext {
  const r = end();
  return {
    backgroundBusy,
    machineBusy: r.machineBusy,
    otherBusy: r.otherBusy,
    sqsServerCpuUsPerMessage: r.sqsServerCpuSeconds === null ? null : (r.sqsServerCpuSeconds * 1e6) / messages,
    postgresCpuUsPerMessage: r.postgresCpuSeconds === null ? null : (r.postgresCpuSeconds * 1e6) / messages,
  };
}

/** The SQS ceiling (client "sdk": masq's SqsSource) or the wire floor (client "wire": the same loop, a minimal SigV4 client). */
export async function measureSqsPhase(env: BenchEnv, w: Workload, o: ComparisonOptions, client: CeilingClient = "sdk"): Promise<SqsCeilingResult & PhaseContext> {
  const n = w.bodies.length;
  const admin = env.sqsClient(env.sqs.endpoint, 16);
  const what = client === "sdk" ? "SQS ceiling" : "wire floor";
  try {
    o.log(`  ${what}: filling a queue with ${n.toLocaleString("en-US")} messages…`);
    const filled = await fillQueue(admin, `bench-${client === "sdk" ? "sqs" : "wire"}`, w.bodies);
    const background = await quiet(o);
    o.log(`  ${what}: draining with ${o.receivers} receivers…`);
    const meter = startCpuMeter(env.sqs.pid());
    const r = await runSqsCeilingProcess({ endpoint: o.endpoint ?? env.sqs.endpoint, queueUrl: filled.queueUrl, receivers: o.receivers, expected: n, client, cpuProfDir: o.cpuProfDir });
    const result = { ...r, ...context(meter, background, n) };
    await deleteQueue(admin, filled.queueUrl);
    return result;
  } finally {
    admin.destroy();
  }
}

export async function measurePgPhase(env: BenchEnv, w: Workload, o: ComparisonOptions): Promise<PgCeilingResult & PhaseContext> {
  const n = w.bodies.length;
  await env.reset();
  const batches = await presealedBatches(env.db.pool, w, KEY, o.batchSize);
  const background = await quiet(o);
  o.log(`  Postgres ceiling: ${n.toLocaleString("en-US")} rows, batches of ${o.batchSize}, ${o.writers} writers…`);
  const meter = startCpuMeter(undefined);
  const r = await measurePgCeiling(env.db.pool, TABLE, batches, { writers: o.writers });
  const result = { ...r, ...context(meter, background, n) };
  if (r.written !== w.valid || r.quarantined !== w.malformed) {
    throw new Error(`Postgres ceiling wrote ${r.written} rows and ${r.quarantined} quarantine records; expected ${w.valid} and ${w.malformed}`);
  }
  return result;
}

export async function measureMasqPhase(env: BenchEnv, w: Workload, o: ComparisonOptions): Promise<MasqMeasurement> {
  const n = w.bodies.length;
  const admin = env.sqsClient(env.sqs.endpoint, 16);
  try {
    await env.reset();
    o.log(`  masq: filling a queue with ${n.toLocaleString("en-US")} messages…`);
    const filled = await fillQueue(admin, "bench-masq", w.bodies);
    const background = await quiet(o);
    o.log(`  masq: bin/masq run --drain with ${o.receivers} receivers, batch size ${o.batchSize}, ${o.writers} writers…`);
    const meter = startCpuMeter(env.sqs.pid());
    const run = await runMasq({
      queueUrl: filled.queueUrl,
      sqsEndpoint: o.endpoint ?? env.sqs.endpoint,
      databaseUrl: env.databaseUrl,
      masterKey: KEY.toString("hex"),
      receivers: o.receivers,
      batchSize: o.batchSize,
      writers: o.writers,
      cpuProfDir: o.cpuProfDir && path.join(o.cpuProfDir, "masq"),
      bin: o.masqBin,
      nodeOptions: o.nodeOptions,
      memoryLimit: o.memoryLimit,
    });
    // masq's Postgres backends end just after masq does; once reaped, their CPU time is in the postmaster's.
    await new Promise((r) => setTimeout(r, 500));
    const ctx = context(meter, background, n);
    const lag = await commitLag(env.db.pool, filled.sentAt);
    const verification = await verifyRun(env.db.pool, w, filled.sentAt);
    await deleteQueue(admin, filled.queueUrl);
    const seconds = (lag.lastCommitAt - run.pipelineStartedAt) / 1000;
    const cpuMs = run.cpuUserMs + run.cpuSystemMs;
    return {
      ...ctx,
      perSecond: n / seconds,
      seconds,
      wallPerSecond: n / run.wallSeconds,
      wallSeconds: run.wallSeconds,
      cpuUsPerMessage: (cpuMs * 1000) / n,
      cpuUserMs: run.cpuUserMs,
      cpuSystemMs: run.cpuSystemMs,
      threads: threadCpuPerMessage(run, n),
      maxRssMb: run.maxRssMb,
      rssSamples: run.rssSamples,
      startupSeconds: (run.pipelineStartedAt - run.spawnedAt) / 1000,
      firstCommitSeconds: (lag.firstCommitAt - run.spawnedAt) / 1000,
      tailSeconds: (run.exitedAt - lag.lastCommitAt) / 1000,
      drainDetectSeconds: run.drainedAt === null ? null : (run.drainedAt - lag.lastCommitAt) / 1000,
      lagP50Ms: lag.p50Ms,
      lagP99Ms: lag.p99Ms,
      lagMaxMs: lag.maxMs,
      stats: run.stats,
      verification,
    };
  } finally {
    admin.destroy();
  }
}

/** Share of the machine that other work may take during a phase before the measurement is discarded. */
export const DISTURBED = 0.1;

export function isDisturbed(...phases: PhaseContext[]): boolean {
  return phases.some((p) => (p.otherBusy ?? 0) > DISTURBED);
}

export function otherLoad(...phases: PhaseContext[]): string {
  return phases.map((p) => `${Math.round((p.otherBusy ?? 0) * 100)}%`).join(" / ");
}

function median<T>(items: readonly T[], by: (t: T) => number): T {
  return [...items].sort((a, b) => by(a) - by(b))[Math.floor((items.length - 1) / 2)]!;
}

/**
 * The main comparison: both ceilings and masq on the same workload, each phase on a fresh queue or table, repeated
 * `repeat` times with the phases interleaved, so that a slow minute of a shared machine lands in one repetition
 * rather than in one phase.
 */
export async function runComparison(
  env: BenchEnv,
  w: Workload,
  o: ComparisonOptions & { repeat: number; lagRate: number | undefined; lagSeconds: number; lagWarmupSeconds: number; seed: number; malformedRate: number },
): Promise<ComparisonResult> {
  const runs: ComparisonRun[] = [];
  // A repetition that other work on the machine disturbed is kept in the record but replaced, up to `repeat` times.
  for (let attempt = 0; runs.filter((r) => !r.disturbed).length < o.repeat && attempt < o.repeat * 2; attempt++) {
    if (o.repeat > 1) o.log(` repetition ${attempt + 1} (${runs.filter((r) => !r.disturbed).length} of ${o.repeat} undisturbed so far)`);
    // CPU profiles of the first repetition are enough.
    const phase = attempt === 0 ? o : { ...o, cpuProfDir: undefined };
    const sqsCeiling = await measureSqsPhase(env, w, phase);
    o.log(`  → SQS ceiling ${Math.round(sqsCeiling.perSecond).toLocaleString("en-US")} msg/s`);
    const wireFloor = await measureSqsPhase(env, w, phase, "wire");
    o.log(`  → wire floor ${Math.round(wireFloor.perSecond).toLocaleString("en-US")} msg/s, ${Math.round(wireFloor.cpuUsPerMessage)} µs/msg (the SDK's ceiling: ${Math.round(sqsCeiling.cpuUsPerMessage)})`);
    const pgCeiling = await measurePgPhase(env, w, phase);
    o.log(`  → Postgres ceiling ${Math.round(pgCeiling.perSecond).toLocaleString("en-US")} msg/s`);
    const masq = await measureMasqPhase(env, w, phase);
    o.log(`  → masq ${Math.round(masq.perSecond).toLocaleString("en-US")} msg/s${masq.verification.ok ? "" : ` — INCORRECT: ${masq.verification.problems.join("; ")}`}`);
    const disturbed = o.waitQuiet && isDisturbed(sqsCeiling, wireFloor, pgCeiling, masq);
    if (disturbed) o.log(`  (other work used the machine during this repetition: ${otherLoad(sqsCeiling, wireFloor, pgCeiling, masq)}; it does not count)`);
    runs.push({ sqsCeiling, wireFloor, pgCeiling, masq, ratio: masq.perSecond / Math.min(sqsCeiling.perSecond, pgCeiling.perSecond), disturbed });
  }
  // Medians over the undisturbed repetitions (over all, if every one was disturbed).
  const counted = runs.some((r) => !r.disturbed) ? runs.filter((r) => !r.disturbed) : runs;
  const masq = median(counted, (r) => r.masq.perSecond).masq;
  let steadyLag: SteadyLagResult | null = null;
  if (o.lagSeconds > 0) {
    const rate = o.lagRate ?? Math.max(10, Math.round(masq.perSecond / 2 / 100) * 100);
    const lw = makeWorkload(rate * (o.lagWarmupSeconds + o.lagSeconds), { seed: o.seed + 1, malformedRate: o.malformedRate });
    steadyLag = await measureSteadyLag(env, lw, { ...o, rate, warmupMessages: rate * o.lagWarmupSeconds, masterKey: KEY.toString("hex") });
    o.log(
      `  → steady lag at ${rate} msg/s: p50 ${Math.round(steadyLag.lagP50Ms)} ms, p99 ${Math.round(steadyLag.lagP99Ms)} ms (warm-up: p99 ${Math.round(steadyLag.warmup?.p99Ms ?? 0)} ms)${steadyLag.verification.ok ? "" : " — INCORRECT"}`,
    );
  }
  return {
    messages: w.bodies.length,
    receivers: o.receivers,
    batchSize: o.batchSize,
    writers: o.writers,
    sqsCeiling: median(counted, (r) => r.sqsCeiling.perSecond).sqsCeiling,
    wireFloor: median(counted, (r) => r.wireFloor!.perSecond).wireFloor!,
    pgCeiling: median(counted, (r) => r.pgCeiling.perSecond).pgCeiling,
    masq: { ...masq, maxRssMb: Math.max(...runs.map((r) => r.masq.maxRssMb)) },
    ratio: median(counted, (r) => r.ratio).ratio,
    // True only when every repetition was disturbed, so the medians could not leave them out.
    disturbed: runs.every((r) => r.disturbed),
    runs,
    steadyLag,
    ok: runs.every((r) => r.masq.verification.ok) && (steadyLag?.verification.ok ?? true),
  };
}
