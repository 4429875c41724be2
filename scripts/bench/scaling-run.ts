import type { BenchEnv } from "./environment.ts";
import { isDisturbed, measureMasqPhase, measureSqsPhase, otherLoad, type ComparisonOptions, type MasqMeasurement, type PhaseContext } from "./main-comparison.ts";
import type { SqsCeilingResult } from "./sqs-ceiling.ts";
import { makeWorkload } from "./workload.ts";

export interface ScalingPoint {
  messages: number;
  /** Other work took more than 10 % of the machine during this point (after one retry). */
  disturbed: boolean;
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
    const opts = { ...o, cpuProfDir: undefined };
    let sqsCeiling = await measureSqsPhase(env, w, opts);
    let masq = await measureMasqPhase(env, w, opts);
    if (o.waitQuiet && isDisturbed(sqsCeiling, masq)) {
      o.log(`  (other work used the machine meanwhile: ${otherLoad(sqsCeiling, masq)}; measuring this size again)`);
      sqsCeiling = await measureSqsPhase(env, w, opts);
      masq = await measureMasqPhase(env, w, opts);
    }
    o.log(`  → SQS ceiling ${Math.round(sqsCeiling.perSecond).toLocaleString("en-US")} msg/s, masq ${Math.round(masq.perSecond).toLocaleString("en-US")} msg/s, peak RSS ${masq.maxRssMb} MB${masq.verification.ok ? "" : " — INCORRECT"}`);
    points.push({ messages: n, sqsCeiling, masq, disturbed: isDisturbed(sqsCeiling, masq), ratio: masq.perSecond / sqsCeiling.perSecond });
  }
  return { receivers: o.receivers, points, ok: points.every((p) => p.masq.verification.ok) };
}
