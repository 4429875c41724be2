import type { BenchEnv } from "./environment.ts";
import { startLatencyProxy } from "./latency-proxy.ts";
import { isDisturbed, measureMasqPhase, measureSqsPhase, otherLoad, type ComparisonOptions, type MasqMeasurement, type PhaseContext } from "./main-comparison.ts";
import type { SqsCeilingResult } from "./sqs-ceiling.ts";
import { makeWorkload } from "./workload.ts";

export interface LatencyPoint {
  receivers: number;
  messages: number;
  sqsCeiling: SqsCeilingResult & PhaseContext;
  masq: MasqMeasurement;
  /** Other work took more than 10 % of the machine during this point (after one retry). */
  disturbed: boolean;
  /** masq ÷ SQS ceiling at this receivers count. */
  ratio: number;
  /** Throughput per receiver relative to one receiver's (1.0 = perfectly linear), for the ceiling and for masq. */
  sqsScaling: number;
  masqScaling: number;
}

export interface LatencyResult {
  latencyMs: number;
  points: LatencyPoint[];
  ok: boolean;
}

/**
 * Latency mode: every request to the SQS server passes a proxy that delays it by latencyMs, as the network to
 * real SQS would. With a round trip that long, one receiver can move at most 10 messages per round trip, so
 * throughput should grow with the receivers count until some CPU saturates; this sweep shows where.
 * The queue is filled directly (not through the proxy); only the consumers pay the latency. Each point drains at
 * least `messages` and `perReceiver` per receiver, so that a fast point is not dominated by its first and last second.
 */
export async function runLatencySweep(
  env: BenchEnv,
  o: Omit<ComparisonOptions, "receivers" | "endpoint"> & { messages: number; perReceiver: number; seed: number; malformedRate: number },
  latencyMs: number,
  receivers: number[],
): Promise<LatencyResult> {
  const proxy = await startLatencyProxy(env.sqs.port, latencyMs);
  const points: LatencyPoint[] = [];
  try {
    for (const r of receivers) {
      const w = makeWorkload(Math.max(o.messages, r * o.perReceiver), { seed: o.seed, malformedRate: o.malformedRate });
      o.log(`latency ${latencyMs} ms, ${r} receivers, ${w.bodies.length.toLocaleString("en-US")} messages:`);
      const opts = { ...o, receivers: r, endpoint: proxy.endpoint, cpuProfDir: undefined };
      let sqsCeiling = await measureSqsPhase(env, w, opts);
      let masq = await measureMasqPhase(env, w, opts);
      if (o.waitQuiet && isDisturbed(sqsCeiling, masq)) {
        o.log(`  (other work used the machine meanwhile: ${otherLoad(sqsCeiling, masq)}; measuring this point again)`);
        sqsCeiling = await measureSqsPhase(env, w, opts);
        masq = await measureMasqPhase(env, w, opts);
      }
      o.log(`  → SQS ceiling ${Math.round(sqsCeiling.perSecond).toLocaleString("en-US")} msg/s, masq ${Math.round(masq.perSecond).toLocaleString("en-US")} msg/s${masq.verification.ok ? "" : " — INCORRECT"}`);
      points.push({ receivers: r, messages: w.bodies.length, sqsCeiling, masq, disturbed: isDisturbed(sqsCeiling, masq), ratio: masq.perSecond / sqsCeiling.perSecond, sqsScaling: 0, masqScaling: 0 });
    }
  } finally {
    await proxy.close();
  }
  const base = points[0]!;
  for (const p of points) {
    p.sqsScaling = p.sqsCeiling.perSecond / p.receivers / (base.sqsCeiling.perSecond / base.receivers);
    p.masqScaling = p.masq.perSecond / p.receivers / (base.masq.perSecond / base.receivers);
  }
  return { latencyMs, points, ok: points.every((p) => p.masq.verification.ok) };
}
