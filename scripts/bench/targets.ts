import type { DrainStartupResult } from "./drain-startup.ts";
import type { LatencyResult } from "./latency-sweep.ts";
import type { ComparisonResult } from "./main-comparison.ts";
import type { ScalingResult } from "./scaling-run.ts";

/** One of masq's performance targets as this run measured it: met is null when the run did not measure it. */
export interface Target {
  target: string;
  /** The measured figure in the goal's unit (null: not measured). */
  value: number | null;
  /** The goal as written, e.g. "≥ 0.9". */
  goal: string;
  met: boolean | null;
  /** How the value was obtained, or why it is missing. */
  detail: string;
}

export interface Measured {
  main: readonly ComparisonResult[];
  latency: LatencyResult | null;
  scaling: ScalingResult | null;
  drainStartup: DrainStartupResult | null;
}

const LATENCY_RECEIVERS = [1, 2, 4, 8, 16, 32];
const LATENCY_MS = 20;
const int = (n: number) => Math.round(n).toLocaleString("en-US");
/** The sizes the targets are stated at; a run of another size is judged, and its detail says so. */
const MAIN_MESSAGES = 100_000;
const DRAIN_MESSAGES = 5_000;
const statedAt = (n: number, stated: number) => (n === stated ? "" : ` — measured at ${int(n)} messages; the target is stated at ${int(stated)}`);

function target(name: string, goal: string, value: number | null, pass: (v: number) => boolean, detail: string, correct = true): Target {
  return { target: name, value, goal, met: value === null ? null : pass(value) && correct, detail };
}

/**
 * masq's performance targets (docs/benchmark.md, "The targets"), judged from what this run measured. Not
 * judged here: back-to-back drains of 2,000 messages (≤ 3 s each), which a test of the drain measures.
 */
export function judgeTargets(m: Measured): Target[] {
  // The targets are stated at masq's defaults: the first main comparison is the one at the default receivers count
  // unless --receivers changed it.
  const main = m.main[0];
  const wrong = (ok: boolean) => (ok ? "" : " (INCORRECT: the run's correctness check failed)");
  const targets: Target[] = [];
  const noMain = "main comparison not run";

  const cpu = "masq CPU µs per message, all its threads";
  targets.push(
    main === undefined
      ? target(cpu, "≤ 120", null, () => false, noMain)
      : target(
          cpu,
          "≤ 120",
          main.masq.cpuUsPerMessage,
          (v) => v <= 120,
          main.masq.threads === null
            ? `process total (getrusage); this masq does not report its threads${statedAt(main.messages, MAIN_MESSAGES)}`
            : `process total (getrusage); by thread: ${main.masq.threads.map((t) => `${t.name} ${int(t.cpuUsPerMessage)}`).join(", ")}${statedAt(main.messages, MAIN_MESSAGES)}`,
        ),
  );

  const ratio = "masq ÷ SQS ceiling, main comparison";
  targets.push(
    main === undefined
      ? target(ratio, "≥ 0.85", null, () => false, noMain)
      : target(
          ratio,
          "≥ 0.85",
          main.ratio,
          (v) => v >= 0.85,
          `${int(main.messages)} messages, ${main.receivers} receivers: masq ${int(main.masq.perSecond)} msg/s ÷ min(SQS ceiling ${int(main.sqsCeiling.perSecond)}, Postgres ceiling ${int(main.pgCeiling.perSecond)}); median of ${main.runs.filter((r) => !r.disturbed).length || main.runs.length}${wrong(main.ok)}${statedAt(main.messages, MAIN_MESSAGES)}`,
          main.ok,
        ),
  );

  const d = m.drainStartup;
  const noDrain = "drain start-up phase not run (main comparison with --drain-messages > 0)";
  const plain = `masq ÷ a sqs-consumer + pg consumer, ${int(d?.messages ?? DRAIN_MESSAGES)} messages, spawn to exit`;
  targets.push(
    d === null || d.masqOverPlain === undefined || d.plainConsumer === undefined
      ? target(plain, "≥ 1.5", null, () => false, d === null ? noDrain : "this run has no sqs-consumer phase")
      : target(
          plain,
          "≥ 1.5",
          d.masqOverPlain,
          (v) => v >= 1.5,
          `masq ${d.masq.wallSeconds.toFixed(2)} s, sqs-consumer + pg ${d.plainConsumer.wallSeconds.toFixed(2)} s (median repetitions); median of ${d.runs.filter((r) => !r.disturbed).length || d.runs.length}${statedAt(d.messages, DRAIN_MESSAGES)}`,
          d.ok,
        ),
  );

  const startup = "run --drain: spawn to pipeline started (its receivers start then)";
  targets.push(
    d === null
      ? target(startup, "≤ 150 ms", null, () => false, noDrain)
      : target(startup, "≤ 150 ms", d.masq.startupSeconds * 1000, (v) => v <= 150, `masq logs no first receive: its receivers start at "pipeline started"; the median repetition's masq${statedAt(d.messages, DRAIN_MESSAGES)}`, d.ok),
  );

  const tail = "a drain's end: last commit to process exit";
  targets.push(
    d === null
      ? target(tail, "≤ 500 ms", null, () => false, noDrain)
      : target(
          tail,
          "≤ 500 ms",
          d.masq.tailSeconds * 1000,
          (v) => v <= 500,
          `${d.masq.drainDetectSeconds === null ? "" : `${int(d.masq.drainDetectSeconds * 1000)} ms to the drain's "queue is empty" line, then ${int((d.masq.tailSeconds - d.masq.drainDetectSeconds) * 1000)} ms to exit; `}the median repetition's masq${statedAt(d.messages, DRAIN_MESSAGES)}`,
          d.ok,
        ),
  );

  const big = m.scaling?.points.filter((p) => p.messages >= 1_000_000) ?? [];
  const rss = "peak RSS at a 1M backlog, as bin/masq runs by default (no user-set Node options)";
  if (big.length === 0) targets.push(target(rss, "< 200 MB", null, () => false, "no 1M point (--scaling 1000000 --node-options= --masq-bin bin/masq)"));
  else if (m.scaling!.masqNodeOptions !== "") {
    targets.push(target(rss, "< 200 MB", null, () => false, `the 1M point ran with NODE_OPTIONS="${m.scaling!.masqNodeOptions}" (${m.scaling!.masqScript}); the target is without: --scaling 1000000 --node-options= --masq-bin bin/masq`));
  } else {
    const worst = Math.max(...big.map((p) => p.masq.maxRssMb));
    targets.push(
      target(rss, "< 200 MB", worst, (v) => v < 200, `${big.map((p) => `${int(p.messages)}: ${p.masq.maxRssMb} MB, ${int(p.masq.cpuUsPerMessage)} µs/msg`).join("; ")}; no NODE_OPTIONS; masq ${m.scaling!.masqScript}`, big.every((p) => p.masq.verification.ok)),
    );
  }

  const linear = `with ${LATENCY_MS} ms latency, masq ÷ ceiling at each of ${LATENCY_RECEIVERS.join(", ")} receivers`;
  const l = m.latency;
  const missing = LATENCY_RECEIVERS.filter((r) => !(l?.points.some((p) => p.receivers === r) ?? false));
  if (l === null) targets.push(target(linear, "≥ 0.9 at each", null, () => false, `latency mode not run (--latency-ms ${LATENCY_MS})`));
  else if (l.latencyMs !== LATENCY_MS) targets.push(target(linear, "≥ 0.9 at each", null, () => false, `latency mode ran at ${l.latencyMs} ms, the target is stated at ${LATENCY_MS}`));
  else if (missing.length > 0) targets.push(target(linear, "≥ 0.9 at each", null, () => false, `receivers ${l.points.map((p) => p.receivers).join(", ")} measured; the target needs ${missing.join(", ")} too`));
  else {
    const at = l.points.filter((p) => LATENCY_RECEIVERS.includes(p.receivers));
    targets.push(target(linear, "≥ 0.9 at each", Math.min(...at.map((p) => p.ratio)), (v) => v >= 0.9, at.map((p) => `${p.receivers}: ${p.ratio.toFixed(2)}`).join("; "), l.ok));
  }

  const lag = main?.steadyLag ?? null;
  const lagName = "steady-state lag p99 (fed at half capacity)";
  targets.push(
    lag === null
      ? target(lagName, "< 150 ms", null, () => false, main === undefined ? noMain : "steady-lag phase skipped (--lag-seconds 0)")
      : target(lagName, "< 150 ms", lag.lagP99Ms, (v) => v < 150, `${int(lag.rate)} msg/s offered for ${int(lag.messages)} messages after ${lag.warmup ? `a warm-up of ${int(lag.warmup.messages)} (its p99 ${int(lag.warmup.p99Ms)} ms)` : "no warm-up"}: p50 ${int(lag.lagP50Ms)} ms, max ${int(lag.lagMaxMs)} ms`, lag.verification.ok),
  );
  return targets;
}

export const formatValue = (t: Target): string => {
  if (t.value === null) return "–";
  if (t.goal.includes("MB")) return `${int(t.value)} MB`;
  if (t.goal.includes("ms")) return `${int(t.value)} ms`;
  return t.value >= 10 ? int(t.value) : t.value.toFixed(2);
};

export const formatMet = (t: Target): string => (t.met === null ? "not measured" : t.met ? "yes" : "no");
