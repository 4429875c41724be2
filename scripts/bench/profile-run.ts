import { mkdirSync } from "node:fs";
import path from "node:path";
import type { BenchEnv } from "./environment.ts";
import { measureMasqPhase, type ComparisonOptions, type MasqMeasurement } from "./main-comparison.ts";
import { summariseProfiles, type ThreadProfile } from "./profile-top.ts";
import type { Workload } from "./workload.ts";

export interface ProfileResult {
  /** Where the .cpuprofile files are (one per thread of masq's process). */
  dir: string;
  /** The profiled run itself (slower than unprofiled: not counted in any median). */
  masq: Pick<MasqMeasurement, "perSecond" | "cpuUsPerMessage" | "threads" | "verification">;
  threads: ThreadProfile[];
}

/**
 * `--profile`: one more masq phase of the main comparison, after it and not counted in it, with V8's CPU profiler on
 * in every thread of masq's process (Node writes one file per thread), summarised per thread by where its time
 * goes: the AWS SDK, pg, pino, masq's own files, GC, idle.
 */
export async function runProfile(env: BenchEnv, w: Workload, o: ComparisonOptions & { profileDir: string }): Promise<ProfileResult> {
  mkdirSync(o.profileDir, { recursive: true });
  o.log(`profile: masq with the V8 CPU profiler in every thread, ${w.bodies.length.toLocaleString("en-US")} messages:`);
  const masq = await measureMasqPhase(env, w, { ...o, cpuProfDir: o.profileDir });
  const dir = path.join(o.profileDir, "masq");
  const threads = summariseProfiles([dir]);
  o.log(`  → ${threads.length} thread profile(s) in ${dir}`);
  return { dir, masq: { perSecond: masq.perSecond, cpuUsPerMessage: masq.cpuUsPerMessage, threads: masq.threads, verification: masq.verification }, threads };
}
