import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import path from "node:path";
import { CORES } from "./cpu-meter.ts";
import type { ContractsResult } from "./contracts-workload.ts";
import type { DrainStartupResult } from "./drain-startup.ts";
import type { LatencyResult } from "./latency-sweep.ts";
import type { ComparisonResult, MasqMeasurement } from "./main-comparison.ts";
import type { BenchOptions } from "./options.ts";
import type { StatementCostResult } from "./pg-statement-cost.ts";
import type { ProfileResult } from "./profile-run.ts";
import { formatThreadProfiles } from "./profile-top.ts";
import type { ScalingResult } from "./scaling-run.ts";
import { formatMet, formatValue, judgeTargets, type Target } from "./targets.ts";

export interface BenchReport {
  /**
   * 2: targets are { target, value, goal, met, detail }; masq measurements carry threads; drainStartup, profile.
   * 3: main runs carry wireFloor; drain start-up runs carry plainConsumer and masqOverPlain; masq measurements carry
   * rssSamples; pgStatementCost.
   */
  schema: 3;
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  machine: { cores: number; cpuModel: string; memoryGb: number; platform: string; nodeVersion: string; postgres: string };
  git: { commit: string; uncommittedChanges: boolean } | null;
  config: BenchOptions;
  /** masq as measured: vault encryption on (local key provider; the KMS call count is the same: one per data key). */
  vault: "on";
  main: ComparisonResult[];
  latency: LatencyResult | null;
  scaling: ScalingResult | null;
  drainStartup: DrainStartupResult | null;
  profile: ProfileResult | null;
  pgStatementCost: StatementCostResult | null;
  /** The contracts workload beside login events (absent in older result files). */
  contracts?: ContractsResult | null;
  targets: Target[];
  ok: boolean;
}

function gitInfo(): BenchReport["git"] {
  try {
    const commit = execFileSync("git", ["rev-parse", "HEAD"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    const status = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    return { commit, uncommittedChanges: status.trim() !== "" };
  } catch {
    return null;
  }
}

export interface Measurements {
  main: ComparisonResult[];
  latency: LatencyResult | null;
  scaling: ScalingResult | null;
  drainStartup: DrainStartupResult | null;
  profile: ProfileResult | null;
  pgStatementCost: StatementCostResult | null;
  contracts: ContractsResult | null;
}

export function buildReport(opts: BenchOptions, started: Date, postgres: string, m: Measurements): BenchReport {
  const finished = new Date();
  const ok = m.main.every((c) => c.ok) && (m.latency?.ok ?? true) && (m.scaling?.ok ?? true) && (m.drainStartup?.ok ?? true) && (m.profile?.masq.verification.ok ?? true) && (m.contracts?.ok ?? true);
  return {
    schema: 3,
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    durationSeconds: (finished.getTime() - started.getTime()) / 1000,
    machine: {
      cores: CORES,
      cpuModel: cpus()[0]?.model ?? "unknown",
      memoryGb: Math.round(totalmem() / 2 ** 30),
      platform: `${process.platform} ${process.arch}`,
      nodeVersion: process.version,
      postgres,
    },
    git: gitInfo(),
    config: opts,
    vault: "on",
    ...m,
    // A smoke run checks correctness only; its sizes are too small to judge speed.
    targets: opts.smoke ? [] : judgeTargets(m),
    ok,
  };
}

/** Writes <outDir>/<timestamp>.json and <outDir>/latest.json; returns the first path. */
export function writeReport(report: BenchReport, outDir: string): string {
  mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `${report.startedAt.replace(/[:.]/g, "-")}.json`);
  const text = `${JSON.stringify(report, null, 2)}\n`;
  writeFileSync(file, text);
  writeFileSync(path.join(outDir, "latest.json"), text);
  return file;
}

/** Cores masq's process kept busy over its measured window (all its threads). */
const masqCores = (m: MasqMeasurement) => (m.cpuUsPerMessage * m.perSecond) / 1e6;
const int = (n: number) => Math.round(n).toLocaleString("en-US");
const pct = (n: number | null) => (n === null ? "–" : `${Math.round(n * 100)}%`);
const opt = (n: number | null) => (n === null ? "–" : int(n));
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** A plain-text table, columns padded to their widest cell; numbers right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

function correctness(m: MasqMeasurement): string {
  const v = m.verification;
  return v.ok
    ? `correct: ${int(v.rows)} rows, ${int(v.rows - v.distinctUsers)} duplicates, ${int(v.quarantined)} quarantined (= malformed), ${int(v.ledger)} ledger ids`
    : `INCORRECT: ${v.problems.join("; ")}`;
}

export function formatReport(r: BenchReport): string {
  const out: string[] = [];
  const m = r.machine;
  out.push(`masq benchmark · ${m.cores} cores (${m.cpuModel}), ${m.memoryGb} GB · Node ${m.nodeVersion} · Postgres ${m.postgres}`);
  out.push(`git ${r.git ? `${r.git.commit.slice(0, 12)}${r.git.uncommittedChanges ? " + uncommitted changes" : ""}` : "unknown"} · vault encryption on (local key provider)`);
  const variant = [r.config.memoryLimitMb !== undefined ? `masq in a ${r.config.memoryLimitMb} MB memory limit` : "", r.config.nodeOptions ? `NODE_OPTIONS="${r.config.nodeOptions}"` : "", r.config.masqBin ? `masq from ${r.config.masqBin}` : ""].filter(Boolean);
  if (variant.length > 0) out.push(`variant: ${variant.join(" · ")}`);
  for (const c of r.main) {
    out.push("");
    out.push(
      `Main comparison: ${int(c.messages)} messages (${int(c.masq.verification.quarantined)} malformed), ${c.receivers} receivers, batch size ${c.batchSize}, ${c.writers} writers${c.runs.length > 1 ? ` · median of ${c.runs.length} repetitions` : ""}`,
    );
    out.push(
      table(
        ["", "msg/s", "time", "CPU µs/msg: client", "SQS server", "Postgres", "machine busy", "other load"],
        [
          ["SQS ceiling", int(c.sqsCeiling.perSecond), `${c.sqsCeiling.seconds.toFixed(1)} s`, int(c.sqsCeiling.cpuUsPerMessage), opt(c.sqsCeiling.sqsServerCpuUsPerMessage), "–", pct(c.sqsCeiling.machineBusy), pct(c.sqsCeiling.otherBusy)],
          ...(c.wireFloor
            ? [["wire floor (no SDK)", int(c.wireFloor.perSecond), `${c.wireFloor.seconds.toFixed(1)} s`, int(c.wireFloor.cpuUsPerMessage), opt(c.wireFloor.sqsServerCpuUsPerMessage), "–", pct(c.wireFloor.machineBusy), pct(c.wireFloor.otherBusy)]]
            : []),
          ["Postgres ceiling", int(c.pgCeiling.perSecond), `${c.pgCeiling.seconds.toFixed(1)} s`, int(c.pgCeiling.clientCpuUsPerMessage), "–", opt(c.pgCeiling.postgresCpuUsPerMessage), pct(c.pgCeiling.machineBusy), pct(c.pgCeiling.otherBusy)],
          ["masq end to end", int(c.masq.perSecond), `${c.masq.seconds.toFixed(1)} s`, int(c.masq.cpuUsPerMessage), opt(c.masq.sqsServerCpuUsPerMessage), opt(c.masq.postgresCpuUsPerMessage), pct(c.masq.machineBusy), pct(c.masq.otherBusy)],
        ],
      ),
    );
    out.push(`masq ÷ min(ceilings) = ${c.ratio.toFixed(2)}   (target ≥ 0.85)`);
    if (c.wireFloor) {
      const main = (p: { mainThreadCpuUsPerMessage?: number | null }) => (p.mainThreadCpuUsPerMessage == null ? "" : ` (main thread ${int(p.mainThreadCpuUsPerMessage)})`);
      out.push(
        `client CPU µs/msg: wire floor ${int(c.wireFloor.cpuUsPerMessage)}${main(c.wireFloor)}, SQS ceiling (the SDK) ${int(c.sqsCeiling.cpuUsPerMessage)}${main(c.sqsCeiling)}, masq ${int(c.masq.cpuUsPerMessage)}: the SDK path costs ${int(c.sqsCeiling.cpuUsPerMessage - c.wireFloor.cpuUsPerMessage)} µs/msg over the wire`,
      );
    }
    out.push(`masq CPU µs/msg, all threads: ${int(c.masq.cpuUsPerMessage)}${c.masq.threads ? ` = ${c.masq.threads.map((t) => `${t.name} ${int(t.cpuUsPerMessage)}`).join(" + ")}` : " (this masq does not report its threads)"}   (target ≤ 120)`);
    if (c.runs.length > 1) {
      const each = (f: (r: (typeof c.runs)[number]) => string) => c.runs.map(f).join(" / ");
      out.push(`repetitions: ratio ${each((r) => `${r.ratio.toFixed(2)}${r.disturbed ? "*" : ""}`)} · SQS ceiling ${each((r) => int(r.sqsCeiling.perSecond))} · masq ${each((r) => int(r.masq.perSecond))} msg/s`);
      if (c.runs.some((r) => r.disturbed)) out.push("  (* disturbed by other work on the machine: recorded, not counted in the medians)");
    }
    out.push(
      `masq: wall ${c.masq.wallSeconds.toFixed(1)} s from spawn to exit (${int(c.masq.wallPerSecond)} msg/s) · CPU ${secs(c.masq.cpuUserMs)} user + ${secs(c.masq.cpuSystemMs)} system · peak RSS ${c.masq.maxRssMb} MB${c.runs.length > 1 ? " (largest of the repetitions)" : ""}`,
    );
    out.push(`masq: backlog lag (commit − send) p50 ${secs(c.masq.lagP50Ms)}, p99 ${secs(c.masq.lagP99Ms)}: the queue was filled before masq started, so this is time spent waiting in the backlog`);
    if (c.steadyLag) {
      const l = c.steadyLag;
      out.push(
        `masq: steady-state lag at ${int(l.rate)} msg/s offered (${int(l.messages)} messages, no backlog): p50 ${int(l.lagP50Ms)} ms, p99 ${int(l.lagP99Ms)} ms, max ${int(l.lagMaxMs)} ms${l.verification.ok ? "" : ` — INCORRECT: ${l.verification.problems.join("; ")}`}`,
        ...(l.warmup && l.warmup.messages > 0
          ? [`masq: its warm-up before that (the first ${int(l.warmup.messages)} messages, sent from masq's start, not counted above): p50 ${int(l.warmup.p50Ms)} ms, p99 ${int(l.warmup.p99Ms)} ms, max ${int(l.warmup.maxMs)} ms`]
          : []),
      );
    }
    out.push(`masq: ${correctness(c.masq)}`);
  }
  if (r.contracts) {
    const c = r.contracts;
    out.push("");
    out.push(`Contracts workload: ${int(c.messages)} messages each, login events and three event types under a contract (bench/contracts/three-types.yaml)${c.runs.length > 1 ? ` · median of ${c.runs.length} repetitions` : ""}`);
    out.push(
      table(
        ["", "msg/s", "CPU µs/msg", "peak RSS", "machine busy", "other load", "correct"],
        [
          ["login events", int(c.login.perSecond), int(c.login.cpuUsPerMessage), `${c.login.maxRssMb} MB`, pct(c.login.machineBusy), pct(c.login.otherBusy), c.login.verification.ok ? "yes" : "NO"],
          ["three event types", int(c.contracts.perSecond), int(c.contracts.cpuUsPerMessage), `${c.contracts.maxRssMb} MB`, pct(c.contracts.machineBusy), pct(c.contracts.otherBusy), c.contracts.verification.ok ? "yes" : `NO: ${c.contracts.verification.problems.join("; ")}`],
        ],
      ),
    );
  }
  if (r.drainStartup) {
    const d = r.drainStartup;
    const x = d.masq;
    out.push("");
    out.push(`Drain start-up: bin/masq run --drain of ${int(d.messages)} messages, spawn to exit${d.runs.length > 1 ? ` · median of ${d.runs.length} repetitions` : ""}`);
    out.push(
      table(
        ["", "msg/s", "time", "spawn → pipeline started", "→ first commit", "last commit → drained", "→ exit", "CPU µs/msg", "correct"],
        [
          ["SQS ceiling", int(d.sqsCeiling.perSecond), `${d.sqsCeiling.seconds.toFixed(2)} s`, "–", "–", "–", "–", int(d.sqsCeiling.cpuUsPerMessage), "yes"],
          ...(d.plainConsumer
            ? [["sqs-consumer + pg, spawn to exit", int(d.plainConsumer.wallPerSecond), `${d.plainConsumer.wallSeconds.toFixed(2)} s`, "–", "–", "–", "–", int(d.plainConsumer.cpuUsPerMessage), "yes"]]
            : []),
          [
            "masq, spawn to exit",
            int(x.wallPerSecond),
            `${x.wallSeconds.toFixed(2)} s`,
            `${x.startupSeconds.toFixed(2)} s`,
            `${x.firstCommitSeconds.toFixed(2)} s`,
            x.drainDetectSeconds === null ? "–" : `${x.drainDetectSeconds.toFixed(2)} s`,
            `${x.tailSeconds.toFixed(2)} s`,
            int(x.cpuUsPerMessage),
            x.verification.ok ? "yes" : "NO",
          ],
        ],
      ),
    );
    out.push(`masq (spawn to exit) ÷ SQS ceiling = ${d.ratio.toFixed(2)}${d.runs.length > 1 ? ` · repetitions ${d.runs.map((q) => `${q.ratio.toFixed(2)}${q.disturbed ? "*" : ""}`).join(" / ")}` : ""}`);
    if (d.masqOverPlain !== undefined) {
      out.push(`masq ÷ sqs-consumer + pg, spawn to exit = ${d.masqOverPlain.toFixed(2)}   (target ≥ 1.5)${d.runs.length > 1 ? ` · repetitions ${d.runs.map((q) => `${q.masqOverPlain?.toFixed(2) ?? "–"}${q.disturbed ? "*" : ""}`).join(" / ")}` : ""}`);
    }
  }
  if (r.latency) {
    const l = r.latency;
    out.push("");
    out.push(`Latency mode: +${l.latencyMs} ms on every request to the SQS server`);
    out.push(
      table(
        ["receivers", "messages", "SQS ceiling msg/s", "of linear", "masq msg/s", "of linear", "masq ÷ ceiling", "masq CPU µs/msg", "masq cores", "machine busy (masq)", "correct"],
        l.points.map((p) => [
          String(p.receivers),
          int(p.messages),
          int(p.sqsCeiling.perSecond),
          p.sqsScaling.toFixed(2),
          int(p.masq.perSecond),
          p.masqScaling.toFixed(2),
          p.ratio.toFixed(2),
          int(p.masq.cpuUsPerMessage),
          masqCores(p.masq).toFixed(2),
          pct(p.masq.machineBusy),
          `${p.masq.verification.ok ? "yes" : "NO"}${p.disturbed ? " (disturbed)" : ""}`,
        ]),
      ),
    );
  }
  if (r.scaling) {
    out.push("");
    out.push(`Scaling: ${r.scaling.receivers} receivers · masq ${r.scaling.masqScript} with NODE_OPTIONS="${r.scaling.masqNodeOptions}"${r.scaling.asImage ? " (the container image's)" : ` (the image's: "${r.scaling.imageNodeOptions}")`}`);
    out.push(
      table(
        ["messages", "SQS ceiling msg/s", "masq msg/s", "masq ÷ ceiling", "masq CPU µs/msg", "masq peak RSS", "correct"],
        r.scaling.points.map((p) => [int(p.messages), int(p.sqsCeiling.perSecond), int(p.masq.perSecond), p.ratio.toFixed(2), int(p.masq.cpuUsPerMessage), `${p.masq.maxRssMb} MB`, `${p.masq.verification.ok ? "yes" : "NO"}${p.disturbed ? " (disturbed)" : ""}`]),
      ),
    );
  }
  if (r.profile) {
    const p = r.profile;
    out.push("");
    out.push(`Profile: one more masq run under the V8 CPU profiler (not counted: ${int(p.masq.perSecond)} msg/s, ${int(p.masq.cpuUsPerMessage)} µs/msg with the profiler), ${p.threads.length} thread(s), files in ${p.dir}`);
    out.push(formatThreadProfiles(p.threads));
  }
  if (r.pgStatementCost) {
    const p = r.pgStatementCost;
    out.push("");
    out.push(`Postgres statement cost: the backend's CPU per message, ${int(p.messages)} messages (${int(p.vaultRows)} vault rows) in batches of ${p.batchSize}, one connection${p.variants[0] && p.variants[0].runs.length > 1 ? ` · median of ${p.variants[0].runs.length}` : ""}`);
    out.push(table(["variant", "µs/msg", "what"], p.variants.map((v) => [v.name, v.cpuUsPerMessage === null ? "–" : v.cpuUsPerMessage.toFixed(1), v.error ? `${v.what} — FAILED: ${v.error}` : v.what])));
  }
  if (r.targets.length > 0) {
    out.push("");
    out.push("Targets:");
    out.push(table(["target", "value", "goal", "met"], r.targets.map((t) => [t.target, formatValue(t), t.goal, formatMet(t)])));
    for (const t of r.targets) out.push(`  ${t.target}: ${t.detail}`);
  }
  out.push("");
  out.push(r.ok ? `Correctness: every run exact (rows, duplicates, quarantine, ledger). ${r.durationSeconds.toFixed(0)} s in all.` : "Correctness: FAILED (see above)");
  return out.join("\n");
}
