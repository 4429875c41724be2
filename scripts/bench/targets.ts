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

const LINEAR_AT = [16, 32];
const LATENCY_MS = 20;
const int = (n: number) => Math.round(n).toLocaleString("en-US");
/** The sizes the targets are stated at; a run of another size is judged, and its detail says so. */
const MAIN_MESSAGES = 100_000;
const DRAIN_MESSAGES = 5_000;
const statedAt = (n: number, stated: number) => (n === stated ? "" : ` — measured at ${int(n)} messages; the target is stated at ${int(stated)}`);

function target(name: string, goal: string, value: number | null, pass: (v: number) => boolean, detail: string, correct = true): Target {
  return { target: name, value, goal, met: value === null ? null : pass(value) && correct, detail };
}

/** masq's performance targets (docs/benchmark.md, "The targets"), judged from what this run measured. */
export function judgeTargets(m: Measured): Target[] {
  // The targets are stated at masq's defaults: the first main comparison is the one at the default receivers count
  // unless --receivers changed it.
  const main = m.main[0];
  const wrong = (ok: boolean) => (ok ? "" : " (INCORRECT: the run's correctness check failed)");
  const targets: Target[] = [];

  targets.push(
    main === undefined
      ? target("masq ÷ SQS ceiling, main comparison", "≥ 0.9", null, () => false, "main comparison not run")
      : target(
          "masq ÷ SQS ceiling, main comparison",
          "≥ 0.9",
          main.ratio,
          (v) => v >= 0.9,
          `${int(main.messages)} messages, ${main.receivers} receivers: masq ${int(main.masq.perSecond)} msg/s ÷ min(SQS ceiling ${int(main.sqsCeiling.perSecond)}, Postgres ceiling ${int(main.pgCeiling.perSecond)}); median of ${main.runs.filter((r) => !r.disturbed).length || main.runs.length}${wrong(main.ok)}${statedAt(main.messages, MAIN_MESSAGES)}`,
          main.ok,
        ),
  );

  targets.push(
    main === undefined
      ? target("masq CPU µs per message, all its threads", "≤ 110", null, () => false, "main comparison not run")
      : target(
          "masq CPU µs per message, all its threads",
          "≤ 110",
          main.masq.cpuUsPerMessage,
          (v) => v <= 110,
          main.masq.threads === null
            ? `process total (getrusage); this masq does not report its threads${statedAt(main.messages, MAIN_MESSAGES)}`
            : `process total (getrusage); by thread: ${main.masq.threads.map((t) => `${t.name} ${int(t.cpuUsPerMessage)}`).join(", ")}${statedAt(main.messages, MAIN_MESSAGES)}`,
        ),
  );

  const big = m.scaling?.points.filter((p) => p.messages >= 1_000_000) ?? [];
  const rss = "peak RSS at a 1M backlog, with the container image's Node options";
  if (big.length === 0) targets.push(target(rss, "< 200 MB", null, () => false, "no 1M point (--scaling 1000000)"));
  else if (!m.scaling!.asImage) {
    targets.push(target(rss, "< 200 MB", null, () => false, `the 1M point ran with NODE_OPTIONS="${m.scaling!.masqNodeOptions}", not the image's "${m.scaling!.imageNodeOptions}" (leave out --node-options)`));
  } else {
    const worst = Math.max(...big.map((p) => p.masq.maxRssMb));
    const script = `; masq ${m.scaling!.masqScript}`;
    targets.push(
      target(rss, "< 200 MB", worst, (v) => v < 200, `${big.map((p) => `${int(p.messages)}: ${p.masq.maxRssMb} MB`).join("; ")}, NODE_OPTIONS="${m.scaling!.masqNodeOptions}"${script}`, big.every((p) => p.masq.verification.ok)),
    );
  }

  const linear = `with ${LATENCY_MS} ms latency, of linear at ${LINEAR_AT.join(" and ")} receivers`;
  const l = m.latency;
  const at = l?.points.filter((p) => LINEAR_AT.includes(p.receivers)) ?? [];
  if (l === null) targets.push(target(linear, "≥ 0.9 at both", null, () => false, `latency mode not run (--latency-ms ${LATENCY_MS})`));
  else if (l.latencyMs !== LATENCY_MS) targets.push(target(linear, "≥ 0.9 at both", null, () => false, `latency mode ran at ${l.latencyMs} ms, the target is stated at ${LATENCY_MS}`));
  else if (at.length < LINEAR_AT.length) targets.push(target(linear, "≥ 0.9 at both", null, () => false, `receivers ${l.points.map((p) => p.receivers).join(", ")} measured; the target needs ${LINEAR_AT.join(" and ")}`));
  else {
    targets.push(
      target(
        linear,
        "≥ 0.9 at both",
        Math.min(...at.map((p) => p.masqScaling)),
        (v) => v >= 0.9,
        `${at.map((p) => `${p.receivers}: ${p.masqScaling.toFixed(2)} (${int(p.masq.perSecond)} msg/s)`).join("; ")}; linear = ${l.points[0]!.receivers} receiver(s) × ${int(l.points[0]!.masq.perSecond / l.points[0]!.receivers)} msg/s each`,
        l.ok,
      ),
    );
  }

  const lag = main?.steadyLag ?? null;
  targets.push(
    lag === null
      ? target("steady-state lag p99 (fed at half capacity)", "< 250 ms", null, () => false, main === undefined ? "main comparison not run" : "steady-lag phase skipped (--lag-seconds 0)")
      : target("steady-state lag p99 (fed at half capacity)", "< 250 ms", lag.lagP99Ms, (v) => v < 250, `${int(lag.rate)} msg/s offered for ${int(lag.messages)} messages: p50 ${int(lag.lagP50Ms)} ms, max ${int(lag.lagMaxMs)} ms`, lag.verification.ok),
  );

  const d = m.drainStartup;
  const drain = `run --drain of ${int(d?.messages ?? DRAIN_MESSAGES)} messages, spawn to exit, ÷ the ceiling's rate on the same queue`;
  targets.push(
    d === null
      ? target(drain, "≥ 0.6", null, () => false, "drain start-up phase not run (main comparison with --drain-messages > 0)")
      : target(
          drain,
          "≥ 0.6",
          d.ratio,
          (v) => v >= 0.6,
          `masq ${d.masq.wallSeconds.toFixed(2)} s spawn to exit (${int(d.masq.wallPerSecond)} msg/s) ÷ SQS ceiling ${int(d.sqsCeiling.perSecond)} msg/s; median of ${d.runs.filter((r) => !r.disturbed).length || d.runs.length}${statedAt(d.messages, DRAIN_MESSAGES)}`,
          d.ok,
        ),
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
