import type { BenchEnv } from "./environment.ts";
import { prepareImageLayout, readImageNodeOptions, type ImageNodeOptions } from "./image-options.ts";
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
  /** NODE_OPTIONS every masq of this run had, and whether they are the container image's (read from the Dockerfile). */
  masqNodeOptions: string;
  imageNodeOptions: string;
  asImage: boolean;
  /** Which masq ran: compiled as the image ships it, the sources, or --masq-bin's. */
  masqScript: string;
  points: ScalingPoint[];
  ok: boolean;
}

/**
 * The scaling run: the same measurement for growing backlogs. masq holds at most MASQ_MAX_IN_FLIGHT messages
 * whatever the backlog, so its throughput should stay flat and its peak RSS should not grow with N. masq runs as the
 * container image runs it (its Node options, and its entry script when that exists in this checkout), so that the
 * memory at a 1M backlog is the image's; --node-options or --masq-bin replace either.
 */
export async function runScaling(env: BenchEnv, sizes: number[], base: ComparisonOptions & { seed: number; malformedRate: number }): Promise<ScalingResult> {
  const image = readImageNodeOptions();
  const layout = base.masqBin === undefined ? prepareImageLayout(image) : undefined;
  try {
    return await scale(env, sizes, { ...base, nodeOptions: base.nodeOptions ?? image.nodeOptions, masqBin: base.masqBin ?? layout!.bin }, image, layout?.describe ?? `--masq-bin ${base.masqBin}`);
  } finally {
    layout?.close();
  }
}

async function scale(env: BenchEnv, sizes: number[], o: ComparisonOptions & { seed: number; malformedRate: number; nodeOptions: string }, image: ImageNodeOptions, masqScript: string): Promise<ScalingResult> {
  o.log(`scaling: masq ${masqScript}, NODE_OPTIONS="${o.nodeOptions}"${o.nodeOptions === image.nodeOptions ? " (the container image's, from the Dockerfile)" : ` (not the image's "${image.nodeOptions}")`}`);
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
  return {
    receivers: o.receivers,
    masqNodeOptions: o.nodeOptions,
    imageNodeOptions: image.nodeOptions,
    asImage: o.nodeOptions === image.nodeOptions,
    masqScript,
    points,
    ok: points.every((p) => p.masq.verification.ok),
  };
}
