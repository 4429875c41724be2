/**
 * `npm run bench`: masq end to end, measured side by side with the SQS and Postgres ceilings it is judged
 * against, in one run on this machine. See docs/benchmark.md and `npm run bench -- --help`.
 */
import { mkdirSync } from "node:fs";
import path from "node:path";
import { runDrainStartup, type DrainStartupResult } from "./bench/drain-startup.ts";
import { startBenchEnv, TABLE } from "./bench/environment.ts";
import { runLatencySweep, type LatencyResult } from "./bench/latency-sweep.ts";
import { runContractsWorkload, type ContractsResult } from "./bench/contracts-workload.ts";
import { runComparison, type ComparisonResult } from "./bench/main-comparison.ts";
import { createMemoryLimit } from "./bench/memory-limit.ts";
import { measureStatementCost, type StatementCostResult } from "./bench/pg-statement-cost.ts";
import { HELP, readOptions, UsageError, type BenchOptions } from "./bench/options.ts";
import { runProfile, type ProfileResult } from "./bench/profile-run.ts";
import { buildReport, formatReport, writeReport } from "./bench/report.ts";
import { runScaling, type ScalingResult } from "./bench/scaling-run.ts";
import { BENCH_KEY, makeWorkload, presealedBatches } from "./bench/workload.ts";

const log = (line: string) => process.stderr.write(`${line}\n`);

async function bench(opts: BenchOptions): Promise<number> {
  const started = new Date();
  if (opts.cpuProf) mkdirSync(opts.cpuProf, { recursive: true });
  log(`Starting Postgres (${process.env.DATABASE_URL ? "DATABASE_URL" : "embedded"}) and the SQS server (fauxqs, own process)…`);
  const memoryLimit = opts.memoryLimitMb === undefined ? undefined : createMemoryLimit(opts.memoryLimitMb);
  const env = await startBenchEnv({ fauxqsAsIs: opts.fauxqsAsIs });
  const common = {
    batchSize: opts.batchSize,
    writers: opts.writers,
    waitQuiet: opts.waitQuiet,
    masqBin: opts.masqBin && path.resolve(opts.masqBin),
    nodeOptions: opts.nodeOptions,
    memoryLimit,
    log,
  };
  const main: ComparisonResult[] = [];
  let latency: LatencyResult | null = null;
  let scaling: ScalingResult | null = null;
  let drainStartup: DrainStartupResult | null = null;
  let profile: ProfileResult | null = null;
  let pgStatementCost: StatementCostResult | null = null;
  let contracts: ContractsResult | null = null;
  try {
    if (opts.main) {
      const w = makeWorkload(opts.messages, { seed: opts.seed, malformedRate: opts.malformedRate });
      for (const receivers of opts.receivers) {
        log(`main comparison: ${opts.messages.toLocaleString("en-US")} messages, ${receivers} receivers:`);
        main.push(
          await runComparison(env, w, {
            ...common,
            receivers,
            repeat: opts.repeat,
            lagRate: opts.lagRate,
            lagSeconds: opts.lagSeconds,
            lagWarmupSeconds: opts.lagWarmupSeconds,
            seed: opts.seed,
            malformedRate: opts.malformedRate,
            cpuProfDir: opts.cpuProf && path.resolve(opts.cpuProf),
          }),
        );
      }
      if (opts.drainMessages > 0) {
        const dw = makeWorkload(opts.drainMessages, { seed: opts.seed + 2, malformedRate: opts.malformedRate });
        drainStartup = await runDrainStartup(env, dw, { ...common, receivers: opts.receivers[0]!, repeat: opts.repeat });
      }
      if (opts.profile !== undefined) {
        const profileDir = path.resolve(opts.profile, started.toISOString().replace(/[:.]/g, "-"));
        profile = await runProfile(env, w, { ...common, receivers: opts.receivers[0]!, profileDir });
      }
    }
    if (opts.drainOnly && opts.drainMessages > 0) {
      const dw = makeWorkload(opts.drainMessages, { seed: opts.seed + 2, malformedRate: opts.malformedRate });
      drainStartup = await runDrainStartup(env, dw, { ...common, receivers: opts.receivers[0]!, repeat: opts.repeat });
    }
    if (opts.latencyMs !== undefined) {
      latency = await runLatencySweep(env, { ...common, messages: opts.latencyMessages, perReceiver: opts.smoke ? 0 : 2500, seed: opts.seed, malformedRate: opts.malformedRate }, opts.latencyMs, opts.latencyReceivers);
    }
    if (opts.scaling.length > 0) {
      scaling = await runScaling(env, opts.scaling, { ...common, receivers: opts.receivers[0]!, seed: opts.seed, malformedRate: opts.malformedRate });
    }
    if (opts.contractsMessages > 0) {
      contracts = await runContractsWorkload(env, opts.contractsMessages, { ...common, receivers: opts.receivers[0]!, repeat: opts.repeat, seed: opts.seed, malformedRate: opts.malformedRate });
    }
    if (opts.pgCostMessages > 0) {
      log(`Postgres statement cost: ${opts.pgCostMessages.toLocaleString("en-US")} messages per variant, ${opts.repeat} repetition(s)…`);
      const pw = makeWorkload(opts.pgCostMessages, { seed: opts.seed + 3, malformedRate: opts.malformedRate });
      await env.reset();
      const batches = await presealedBatches(env.db.pool, pw, BENCH_KEY, opts.batchSize);
      pgStatementCost = await measureStatementCost(env.databaseUrl, TABLE, batches, { repeat: opts.repeat, log, local: env.postgres === "embedded" || /^(127\.0\.0\.1|localhost|\[::1\]):/.test(env.postgres) });
    }
  } finally {
    await env.close();
    memoryLimit?.close();
  }
  const report = buildReport(opts, started, `${env.postgresVersion} (${env.postgres})`, { main, latency, scaling, drainStartup, profile, pgStatementCost, contracts });
  process.stdout.write(`\n${formatReport(report)}\n`);
  if (opts.outDir !== undefined) log(`\nwrote ${writeReport(report, opts.outDir)} and ${path.join(opts.outDir, "latest.json")}`);
  if (opts.cpuProf) log(`CPU profiles in ${opts.cpuProf} (masq's threads under masq/; open in Chrome DevTools › Performance, or summarise with scripts/bench/profile-top.ts)`);
  return report.ok ? 0 : 1;
}

try {
  const opts = readOptions(process.argv.slice(2));
  if (opts === undefined) {
    process.stdout.write(`${HELP}\n`);
    process.exit(0);
  }
  process.exit(await bench(opts));
} catch (err) {
  if (err instanceof UsageError) {
    log(`bench: ${err.message}\n(run with --help for usage)`);
    process.exit(2);
  }
  log(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
}
