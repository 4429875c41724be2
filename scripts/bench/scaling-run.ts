import type { BenchEnv } from "./environment.ts";
import path from "node:path";
import { readImageNodeOptions, REPO_ROOT } from "./image-options.ts";
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
  /** The script masq ran from, relative to the repository or as given by --masq-bin. */
  masqScript: string;
  /** The script the image's ENTRYPOINT runs (null if the Dockerfile's ENTRYPOINT is not `node <script>`). */
  imageScript: string | null;
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
  const o = { ...base, nodeOptions: base.nodeOptions ?? image.nodeOptions, masqBin: base.masqBin ?? image.runs };
  o.log(`scaling: masq with NODE_OPTIONS="${o.nodeOptions}"${o.nodeOptions === image.nodeOptions ? " (the container image's, from the Dockerfile)" : ` (not the image's "${image.nodeOptions}")`}, ${path.relative(REPO_ROOT, o.masqBin) || o.masqBin}`);
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
    masqScript: path.relative(REPO_ROOT, o.masqBin) || o.masqBin,
    imageScript: image.script,
    points,
    ok: points.every((p) => p.masq.verification.ok),
  };
}
