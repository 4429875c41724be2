import { spawn } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BENCH_CREDENTIALS } from "./environment.ts";
import type { MemoryLimit } from "./memory-limit.ts";
import { parseProcessUsage, type ThreadUsage } from "./usage.ts";

const OWN_BIN = fileURLToPath(new URL("../../bin/masq", import.meta.url));

export interface MasqRunOptions {
  queueUrl: string;
  sqsEndpoint: string;
  databaseUrl: string;
  /** Hex master key (local key provider) for this benchmark only; masq keeps its pseudonym key wrapped under it. */
  masterKey: string;
  receivers: number;
  batchSize: number;
  writers: number;
  /** `run --drain` (default) or `run`, which keeps polling until stop(). */
  drain?: boolean;
  /** Write V8 CPU profiles of the masq process into this directory: one file per thread (Node's default names). */
  cpuProfDir?: string | undefined;
  /** Another checkout's bin/masq, for A/B comparisons; default this checkout's. */
  bin?: string | undefined;
  /** Extra Node options for the masq process (NODE_OPTIONS). */
  nodeOptions?: string | undefined;
  /** Run masq under this memory limit, as a container would. */
  memoryLimit?: MemoryLimit | undefined;
  /** More settings for masq (MASQ_CONTRACT, for the contracts workload). */
  env?: Record<string, string> | undefined;
  timeoutMs?: number;
}

export interface MasqRunResult {
  exitCode: number | null;
  /** Spawn to exit, including Node's start, migrations check and the drain's final empty polls. */
  wallSeconds: number;
  /** When masq was spawned and when it exited (ms since epoch, this process's clock, as masq's log and Postgres use). */
  spawnedAt: number;
  exitedAt: number;
  /** When masq logged "pipeline started" (ms since epoch, from the log line's own timestamp). */
  pipelineStartedAt: number;
  /** When a drain logged that the queue is empty and everything is committed (null: not a drain, or not logged). */
  drainedAt: number | null;
  cpuUserMs: number;
  cpuSystemMs: number;
  maxRssMb: number;
  /** Each JavaScript thread's CPU time, from masq versions that report it; null from older ones. */
  threads: ThreadUsage[] | null;
  /** Resident set size over the run: [seconds since spawn, MB], every RSS_SAMPLE_MS (empty off Linux). */
  rssSamples: [number, number][];
  /** masq's own counters from its "pipeline stopped" line. */
  stats: Record<string, unknown>;
  /** The last log lines, for a report when something went wrong. */
  tail: string[];
}

export interface MasqProcess {
  /** Resolves when masq logs "pipeline started". */
  started: Promise<void>;
  /** Graceful stop (SIGTERM): masq commits and deletes what it holds, then exits. */
  stop(): void;
  /** Resolves once masq has exited 0 and reported its usage; rejects otherwise. */
  finished: Promise<MasqRunResult>;
}

/** How often masq's resident set size is sampled from /proc/<pid>/status (VmRSS). */
export const RSS_SAMPLE_MS = 500;

/** A process's resident set size in MB, or null (gone, or not Linux). */
function residentMb(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb === undefined ? null : Math.round(Number(kb) / 102.4) / 10;
  } catch {
    return null;
  }
}

/** Children still running, so an interrupted benchmark does not leave a masq behind. */
const running = new Set<ReturnType<typeof spawn>>();
process.on("exit", () => {
  for (const c of running) c.kill("SIGKILL");
});

/**
 * masq end to end: `bin/masq run [--drain]` as a child process with the given settings, its JSON log lines parsed
 * from stdout. CPU time and peak RSS are masq's own report at exit ("process usage": getrusage of the process).
 */
export function startMasq(opts: MasqRunOptions): MasqProcess {
  const drain = opts.drain ?? true;
  // Node's default profile names carry the thread id (CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile): a fixed
  // --cpu-prof-name would have every worker thread overwrite the same file.
  const nodeOptions = [opts.cpuProfDir ? `--cpu-prof --cpu-prof-dir=${opts.cpuProfDir}` : "", opts.nodeOptions ?? ""].filter(Boolean).join(" ");
  const env: NodeJS.ProcessEnv = {
    // bin/masq's first line execs the `node` on PATH: this Node, so that both sides of an A/B run on the same one.
    PATH: [path.dirname(process.execPath), process.env.PATH].filter(Boolean).join(path.delimiter),
    HOME: process.env.HOME,
    QUEUE_URL: opts.queueUrl,
    AWS_ENDPOINT_URL_SQS: opts.sqsEndpoint,
    AWS_ACCESS_KEY_ID: BENCH_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: BENCH_CREDENTIALS.secretAccessKey,
    AWS_REGION: "us-east-1",
    DATABASE_URL: opts.databaseUrl,
    MASQ_MASTER_KEY: opts.masterKey,
    MASQ_RECEIVERS: String(opts.receivers),
    MASQ_BATCH_SIZE: String(opts.batchSize),
    MASQ_WRITERS: String(opts.writers),
    MASQ_LOG_LEVEL: "info",
    // The metrics listener stays on, as in production, on a free port so that no other masq on the machine collides.
    MASQ_HTTP_PORT: "0",
    ...(nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}),
    ...opts.env,
  };
  const bin = opts.bin ?? OWN_BIN;
  // As a user runs it: an entry script with a shebang (bin/masq) is executed itself, so that its first line applies
  // the Node options it gives masq by default (unless NODE_OPTIONS sets a space size); `node bin/masq` would skip them.
  const argv = [...(isExecutableScript(bin) ? [] : [process.execPath]), bin, "run", ...(drain ? ["--drain"] : [])];
  const [command, ...args] = opts.memoryLimit ? opts.memoryLimit.wrap(argv) : argv;
  const spawnedAt = Date.now();
  const spawnedAtMono = performance.now();
  const child = spawn(command!, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  const lines: string[] = [];
  const parsed: Record<string, unknown>[] = [];
  let partial = "";
  let onStarted: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (onStarted = resolve));
  child.stdout.on("data", (chunk: Buffer) => {
    const parts = (partial + chunk.toString()).split("\n");
    partial = parts.pop() ?? "";
    for (const line of parts) {
      if (line === "") continue;
      lines.push(line);
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        parsed.push(entry);
        if (entry.msg === "pipeline started") onStarted();
      } catch {
        // not a log line
      }
    }
  });
  child.stderr.on("data", (chunk: Buffer) => lines.push(...chunk.toString().split("\n").filter(Boolean)));
  const rssSamples: [number, number][] = [];
  const sampler = setInterval(() => {
    const mb = residentMb(child.pid);
    if (mb !== null) rssSamples.push([Math.round(performance.now() - spawnedAtMono) / 1000, mb]);
  }, RSS_SAMPLE_MS);

  const finished = (async (): Promise<MasqRunResult> => {
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 1_800_000);
    const exitCode = await new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    clearTimeout(timer);
    clearInterval(sampler);
    running.delete(child);
    const wallSeconds = (performance.now() - spawnedAtMono) / 1000;
    const exitedAt = Date.now();
    const find = (msg: string) => parsed.find((l) => l.msg === msg);
    const startedLine = find("pipeline started");
    const usage = find("process usage");
    const stopped = find("pipeline stopped");
    const drained = find("queue is empty and everything received is committed and deleted");
    const tail = lines.slice(-15);
    if (exitCode !== 0 || startedLine === undefined || usage === undefined) {
      throw new Error(`masq ${argv.slice(2).join(" ")} exited with ${exitCode}:\n${tail.join("\n")}`);
    }
    const stats: Record<string, unknown> = { ...stopped };
    for (const k of ["level", "time", "service", "msg"]) delete stats[k];
    const u = parseProcessUsage(usage);
    return {
      exitCode,
      wallSeconds,
      spawnedAt,
      exitedAt,
      pipelineStartedAt: Date.parse(String(startedLine.time)),
      drainedAt: drained === undefined ? null : Date.parse(String(drained.time)),
      cpuUserMs: u.cpuUserMs,
      cpuSystemMs: u.cpuSystemMs,
      maxRssMb: u.maxRssMb,
      threads: u.threads,
      rssSamples,
      stats,
      tail,
    };
  })();
  // A masq that dies before it starts must not leave `started` pending forever.
  void finished.catch(() => undefined).finally(onStarted);
  return { started, finished, stop: () => child.kill("SIGTERM") };
}

/** `bin/masq run --drain` to the end. */
export async function runMasq(opts: MasqRunOptions): Promise<MasqRunResult> {
  return startMasq({ ...opts, drain: true }).finished;
}

/** A file that starts with a shebang line (bin/masq's sh/Node polyglot), which the kernel runs itself. */
function isExecutableScript(file: string): boolean {
  try {
    return (statSync(file).mode & 0o111) !== 0 && readFileSync(file, { encoding: "latin1" }).startsWith("#!");
  } catch {
    return false;
  }
}
