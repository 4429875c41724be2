import { parseArgs } from "node:util";

/** What one `npm run bench` invocation measures. Read once from the command line; every error names the flag. */
export interface BenchOptions {
  /** Messages per run of the main comparison. */
  messages: number;
  /** Receivers for the main comparison and the scaling run (one run per value), and the latency sweep. */
  receivers: number[];
  /** masq's batch size and writers; the Postgres ceiling uses the same. */
  batchSize: number;
  writers: number;
  malformedRate: number;
  seed: number;
  /** Repetitions of the main comparison (phases interleaved; medians reported). */
  repeat: number;
  main: boolean;
  /** Latency mode: a fixed delay (ms) in front of the SQS server, swept over latencyReceivers. */
  latencyMs: number | undefined;
  latencyReceivers: number[];
  latencyMessages: number;
  /** Scaling run: one masq drain per backlog size. */
  scaling: number[];
  /** Write V8 CPU profiles of the masq process (main comparison) into this directory. */
  cpuProf: string | undefined;
  /** After the main comparison, one uncounted masq run with profiles of every thread, summarised; into this directory. */
  profile: string | undefined;
  /** Postgres statement cost: backend CPU per row of masq's statement, its parts and cheaper shapes, over this many messages (0: skip). */
  pgCostMessages: number;
  /** Drain start-up phase: `masq run --drain` of this many messages, spawn to exit, against the SQS ceiling (0: skip). */
  drainMessages: number;
  /** Only the drain start-up phase (no main comparison around it). */
  drainOnly: boolean;
  /** Contracts workload: masq on this many login events and on as many events of three types under a contract (0: skip). */
  contractsMessages: number;
  /** Another checkout's bin/masq to measure instead of this one's (A/B comparisons). */
  masqBin: string | undefined;
  /** NODE_OPTIONS for every masq process (e.g. V8 heap flags). */
  nodeOptions: string | undefined;
  /** Run every masq process under this memory limit (MB), as a container would. */
  memoryLimitMb: number | undefined;
  /** Steady-state lag: messages per second offered to a running masq (undefined: half masq's measured rate). */
  lagRate: number | undefined;
  lagSeconds: number;
  /** Sent before the measured part of the steady-lag phase, at the same rate, and reported apart. */
  lagWarmupSeconds: number;
  /** Leave fauxqs's O(backlog) dequeue as it is (see fauxqs-o1-dequeue.ts). */
  fauxqsAsIs: boolean;
  smoke: boolean;
  /** Wait for the machine to be nearly idle before each phase (not in a smoke run, or with --no-wait-quiet). */
  waitQuiet: boolean;
  /** Where result JSON goes; undefined: do not write. */
  outDir: string | undefined;
}

export const HELP = `npm run bench -- [options]

Measures masq end to end against the two ceilings it is judged by, in one run on this machine: an SQS server
(fauxqs) in its own process, real Postgres (embedded, or DATABASE_URL), and masq itself as a child process
(bin/masq run --drain). Prints a table and writes bench/results/<timestamp>.json and bench/results/latest.json.

Sections (the main comparison runs by default; --latency-ms, --scaling, --pg-cost or --contracts run instead of it unless --main is given):
  main        SQS ceiling, wire floor, Postgres ceiling and masq on the same N messages, each on a fresh queue or table
  pg cost     Postgres's own CPU per row for masq's batch statement, its parts, and cheaper shapes of them
  latency     SQS ceiling and masq behind a fixed per-request delay, for each receivers count
  scaling     masq (and the SQS ceiling) for each backlog size, with peak RSS
  contracts   masq on login events and on three event types under a contract, the same number of messages each

Options:
  --messages <n>            messages in the main comparison (default 100000)
  --receivers <list>        receivers, comma-separated (default 8, masq's default; latency mode: 1,2,4,8,16,32)
  --batch-size <n>          masq batch size, also the Postgres ceiling's (default 1000, masq's default)
  --writers <n>             masq writers, also the Postgres ceiling's concurrency (default 2, masq's default)
  --malformed-rate <r>      share of malformed messages (default 0.01)
  --seed <n>                seed of the synthetic events (default 42)
  --repeat <n>              repetitions of the main comparison, phases interleaved, medians reported (default 3;
                            on a shared or virtual machine one repetition can land on a slow minute)
  --main                    run the main comparison as well as --latency-ms / --scaling
  --latency-ms <ms>         latency mode: delay every request to the SQS server by this much (e.g. 20)
  --latency-messages <n>    messages per latency point (default 10000, and at least 2,500 per receiver)
  --scaling <list>          scaling run over these backlog sizes, e.g. 10000,100000 (1000000 takes a while); masq
                            runs with the container image's Node options (read from the Dockerfile) unless
                            --node-options is given
  --drain-messages <n>      drain start-up phase of the main comparison: bin/masq run --drain of <n> messages timed
                            from spawn to exit against the SQS ceiling and an sqs-consumer + pg consumer on
                            identical queues (default 5000; 0 skips)
  --drain-only              only the drain start-up phase (its --repeat repetitions), without the main comparison
  --contracts               contracts workload: masq on login events and on three event types under a privacy
                            contract (bench/contracts/three-types.yaml), --repeat times interleaved (in --full
                            and --smoke)
  --contracts-messages <n>  messages per contracts-workload run (default 50000)
  --pg-cost                 Postgres statement cost: backend CPU per row of masq's statement, without the vault, a
                            plain unnest INSERT, COPY, and variants of the ledger and the vault (an experiment in
                            scratch tables; the schema is not changed); --repeat times, interleaved
  --pg-cost-messages <n>    messages the Postgres statement cost writes per variant (default 20000)
  --full                    main comparison (with drain start-up and the sqs-consumer + pg consumer, and steady lag)
                            + --latency-ms 20 (receivers 1, 2, 4, 8, 16, 32) + --scaling 10000,100000 + --pg-cost + --contracts
  --profile                 after the main comparison, one more masq run (not counted) with V8 CPU profiles of every
                            thread, and a summary per thread of where its time goes (AWS SDK, pg, pino, masq's
                            files, GC, idle); profiles in bench/profiles/<start time>/masq
  --profile-dir <dir>       --profile, with the profiles under <dir>/<start time> instead
  --cpu-prof <dir>          write V8 CPU profiles of masq and of the SQS ceiling consumer (main comparison) to <dir>
  --lag-rate <n>            steady-state lag phase: offer this many msg/s to a running masq (default: half the
                            rate masq reached in the main comparison)
  --lag-seconds <s>         how long the steady-state lag phase sends (default 10; 0 skips it), after its warm-up
  --lag-warmup-seconds <s>  the steady-state lag phase first sends this long at the same rate, reported apart and
                            left out of its p50/p99: masq's first second after start (first statements, JIT) is
                            not its steady state (default 3; 1 with --smoke)
  --node-options <flags>    NODE_OPTIONS for every masq process, e.g. "--max-semi-space-size=16"
  --memory-limit <MB>       run every masq process in a cgroup with this memory limit, as a container would
                            (deploy/kubernetes sets 512); Linux, needs root
  --fauxqs-as-is            do not give fauxqs an O(1) ready list (its dequeue then costs O(backlog) per message)
  --masq-bin <path>         measure another checkout's bin/masq instead of this one's (for A/B comparisons)
  --no-wait-quiet           start each phase at once instead of waiting (up to 2 min) for the machine to be idle:
                            for trying options on a busy machine; its numbers are not comparable
  --smoke                   a few thousand messages (and one small drain through a 5 ms latency proxy, and the
                            Postgres statement cost on 2,000), correctness only; exits non-zero on any mismatch
  --out <dir>               where to write results (default bench/results; a smoke run writes none unless given)
  --no-write                do not write result files
  -h, --help                this text

Environment: DATABASE_URL (else an embedded Postgres is started; a fresh database is created either way, so the
role needs CREATEDB).`;

export class UsageError extends Error {}

function int(name: string, value: string | undefined, def: number, min = 1): number {
  if (value === undefined) return def;
  const n = Number(value.replace(/_/g, ""));
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be a whole number ≥ ${min} (got "${value}")`);
  return n;
}

function list(name: string, value: string | undefined, def: number[]): number[] {
  if (value === undefined) return def;
  const items = value.split(",").map((v) => int(name, v.trim(), 0));
  if (items.length === 0) throw new UsageError(`--${name} needs at least one value`);
  return items;
}

/** Returns undefined when --help was asked for. */
export function readOptions(argv: string[]): BenchOptions | undefined {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      options: {
        messages: { type: "string" },
        receivers: { type: "string" },
        "batch-size": { type: "string" },
        writers: { type: "string" },
        "malformed-rate": { type: "string" },
        seed: { type: "string" },
        repeat: { type: "string" },
        main: { type: "boolean" },
        "latency-ms": { type: "string" },
        "latency-messages": { type: "string" },
        scaling: { type: "string" },
        full: { type: "boolean" },
        "cpu-prof": { type: "string" },
        profile: { type: "boolean" },
        "profile-dir": { type: "string" },
        "drain-messages": { type: "string" },
        "drain-only": { type: "boolean" },
        contracts: { type: "boolean" },
        "contracts-messages": { type: "string" },
        "pg-cost": { type: "boolean" },
        "pg-cost-messages": { type: "string" },
        "masq-bin": { type: "string" },
        "node-options": { type: "string" },
        "memory-limit": { type: "string" },
        "lag-rate": { type: "string" },
        "lag-seconds": { type: "string" },
        "lag-warmup-seconds": { type: "string" },
        "fauxqs-as-is": { type: "boolean" },
        smoke: { type: "boolean" },
        "no-wait-quiet": { type: "boolean" },
        out: { type: "string" },
        "no-write": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values;
  if (v.help) return undefined;
  const full = v.full === true;
  const smoke = v.smoke === true;
  // A smoke run also drains one small queue through the latency proxy, so that path is checked too.
  const latencyMs = v["latency-ms"] !== undefined ? int("latency-ms", v["latency-ms"], 0, 0) : full ? 20 : smoke ? 5 : undefined;
  const scaling = list("scaling", v.scaling, full ? [10_000, 100_000] : []);
  const pgCost = full || smoke || v["pg-cost"] === true || v["pg-cost-messages"] !== undefined;
  const malformedRate = v["malformed-rate"] === undefined ? 0.01 : Number(v["malformed-rate"]);
  if (!(malformedRate >= 0 && malformedRate < 1)) throw new UsageError(`--malformed-rate must be from 0 to below 1 (got "${v["malformed-rate"]}")`);
  const receivers = list("receivers", v.receivers, [8]);
  return {
    messages: int("messages", v.messages, smoke ? 3000 : 100_000),
    receivers,
    batchSize: int("batch-size", v["batch-size"], 1000),
    writers: int("writers", v.writers, 2),
    malformedRate,
    seed: int("seed", v.seed, 42, 0),
    repeat: int("repeat", v.repeat, smoke ? 1 : 3),
    main:
      v["drain-only"] !== true &&
      (full || smoke || v.main === true || v.profile === true || v["profile-dir"] !== undefined || (latencyMs === undefined && scaling.length === 0 && !pgCost && v.contracts !== true && v["contracts-messages"] === undefined)),
    latencyMs,
    latencyReceivers: v.receivers !== undefined ? receivers : smoke ? [4] : [1, 2, 4, 8, 16, 32],
    latencyMessages: int("latency-messages", v["latency-messages"], smoke ? 1000 : 10_000),
    scaling,
    cpuProf: v["cpu-prof"],
    profile: v.profile === true || v["profile-dir"] !== undefined ? (v["profile-dir"] ?? "bench/profiles") : undefined,
    pgCostMessages: pgCost ? int("pg-cost-messages", v["pg-cost-messages"], smoke ? 2000 : 20_000) : 0,
    drainMessages: int("drain-messages", v["drain-messages"], smoke ? 1000 : 5000, 0),
    drainOnly: v["drain-only"] === true,
    contractsMessages: full || smoke || v.contracts === true || v["contracts-messages"] !== undefined ? int("contracts-messages", v["contracts-messages"], smoke ? 1000 : 50_000) : 0,
    masqBin: v["masq-bin"],
    nodeOptions: v["node-options"],
    memoryLimitMb: v["memory-limit"] === undefined ? undefined : int("memory-limit", v["memory-limit"], 0, 64),
    lagRate: v["lag-rate"] === undefined ? (smoke ? 1000 : undefined) : int("lag-rate", v["lag-rate"], 0, 10),
    lagSeconds: int("lag-seconds", v["lag-seconds"], smoke ? 2 : 10, 0),
    lagWarmupSeconds: int("lag-warmup-seconds", v["lag-warmup-seconds"], smoke ? 1 : 3, 0),
    fauxqsAsIs: v["fauxqs-as-is"] === true,
    smoke,
    waitQuiet: !smoke && v["no-wait-quiet"] !== true,
    // A smoke run checks correctness only; its numbers must not replace the committed results.
    outDir: v["no-write"] === true || (smoke && v.out === undefined) ? undefined : (v.out ?? "bench/results"),
  };
}
