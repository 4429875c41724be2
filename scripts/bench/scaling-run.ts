import type { BenchEnv } from "./environment.ts";
import { measureMasqPhase, measureSqsPhase, type ComparisonOptions, type MasqMeasurement, type PhaseContext } from "./main-comparison.ts";
import type { SqsCeilingResult } from "./sqs-ceiling.ts";
import { makeWorkload } from "./workload.ts";

export interface ScalingPoint {
  messages: number;
  sqsCeiling: SqsCeilingResult & PhaseContext;
  masq: MasqMeasurement;
  ratio: number;
}

export interface ScalingResult {
  receivers: number;
  points: ScalingPoint[];
  ok: boolean;
}

/**
 * The scaling run: the same measurement for growing backlogs. masq holds at most MASQ_MAX_IN_FLIGHT messages
 * whatever the backlog, so its throughput should stay flat and its peak RSS should not grow with N.
 */
export async function runScaling(env: BenchEnv, sizes: number[], o: ComparisonOptions & { seed: number; malformedRate: number }): Promise<ScalingResult> {
  const points: ScalingPoint[] = [];
  for (const n of sizes) {
    o.log(`scaling: ${n.toLocaleString("en-US")} messages, ${o.receivers} receivers:`);
    const w = makeWorkload(n, { seed: o.seed, malformedRate: o.malformedRate });
    const sqsCeiling = await measureSqsPhase(env, w, o);
    const masq = await measureMasqPhase(env, w, { ...o, cpuProfDir: undefined });
    o.log(`  → SQS ceiling ${Math.round(sqsCeiling.perSecond).toLocaleString("en-US")} msg/s, masq ${Math.round(masq.perSecond).toLocaleString("en-US")} msg/s, peak RSS ${masq.maxRssMb} MB${masq.verification.ok ? "" : " — INCORRECT"}`);
    points.push({ messages: n, sqsCeiling, masq, ratio: masq.perSecond / sqsCeiling.perSecond });
  }
  return { receivers: o.receivers, points, ok: points.every((p) => p.masq.verification.ok) };
}
