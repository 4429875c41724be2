/**
 * Summarises V8 CPU profiles (.cpuprofile, as written by `npm run bench -- --profile` or `--cpu-prof <dir>`): per
 * thread, self time by category (the AWS SDK, pg, pino, masq's own files, GC, idle, …), by package or source file,
 * and the functions with the most self time.
 *
 *   node scripts/bench/profile-top.ts <file.cpuprofile | dir>… [--top 25]
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

export interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  name: string;
  share: number;
  ms: number;
}

function where(url: string): string {
  if (url === "") return "";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) return url.slice(nm + "node_modules/".length);
  const src = url.search(/\/(src|scripts|bin)\//);
  return src >= 0 ? url.slice(src + 1) : url.replace(/^file:\/\//, "");
}

/** The package (node_modules/<pkg>), the project file, node's internals, or V8's own (GC, idle, program). */
function group(url: string, fn: string): string {
  if (url === "") return fn.startsWith("(") ? fn : "(native)";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const parts = url.slice(nm + "node_modules/".length).split("/");
    return parts[0]!.startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  if (url.startsWith("node:")) return "node internals";
  return where(url);
}

const AWS = /^@(aws-sdk|smithy|aws-crypto|aws)\//;
const PG = /^(pg|pg-[a-z-]+|pgpass|postgres-[a-z-]+)$/;
const PINO = /^(pino|pino-[a-z-]+|sonic-boom|thread-stream|fast-redact|on-exit-leak-free|quick-format-unescaped|atomic-sleep|safe-stable-stringify|real-require)$/;

/**
 * The lever a group belongs to: "aws-sdk" (every @aws-sdk, @smithy and @aws-crypto package), "pg", "pino",
 * "masq" for masq's own sources (groups keep them by file), "GC", "idle", "node internals", "(native)", "wasm"
 * (cjs-module-lexer, loading CommonJS packages), or the package's own name.
 */
export function category(group: string): string {
  if (AWS.test(group)) return "aws-sdk";
  if (PG.test(group)) return "pg";
  if (PINO.test(group)) return "pino";
  if (group === "(garbage collector)") return "GC";
  if (group === "(idle)") return "idle";
  if (group === "(program)") return "V8 (program)";
  if (group.startsWith("src/") || group.startsWith("bin/")) return "masq";
  if (group.startsWith("scripts/")) return "bench scripts";
  if (group.startsWith("wasm://")) return "wasm";
  return group;
}

export interface ProfileSummary {
  totalMs: number;
  /** Self time by category(), the whole of it (shares add up to 1). */
  categories: ProfileEntry[];
  functions: (ProfileEntry & { category: string })[];
  groups: ProfileEntry[];
}

export function summariseProfile(p: Profile, top = 25): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let total = 0;
  p.samples.forEach((id, i) => {
    const dt = p.timeDeltas[i] ?? 0;
    total += dt;
    self.set(id, (self.get(id) ?? 0) + dt);
  });
  const fns = new Map<string, number>();
  const fnCategory = new Map<string, string>();
  const groups = new Map<string, number>();
  const categories = new Map<string, number>();
  for (const [id, t] of self) {
    const cf = byId.get(id)!.callFrame;
    const name = `${cf.functionName || "(anonymous)"}${cf.url ? ` ${where(cf.url)}:${cf.lineNumber + 1}` : ""}`;
    fns.set(name, (fns.get(name) ?? 0) + t);
    const g = group(cf.url, cf.functionName);
    groups.set(g, (groups.get(g) ?? 0) + t);
    const c = category(g);
    fnCategory.set(name, c);
    categories.set(c, (categories.get(c) ?? 0) + t);
  }
  const rank = (m: Map<string, number>, n: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .slice(0, n)
      .map(([name, t]) => ({ name, share: total > 0 ? t / total : 0, ms: t / 1000 }));
  return {
    totalMs: total / 1000,
    categories: rank(categories, Infinity),
    functions: rank(fns, top).map((e) => ({ ...e, category: fnCategory.get(e.name)! })),
    groups: rank(groups, Infinity),
  };
}

export interface ThreadProfile extends ProfileSummary {
  file: string;
  pid: number | null;
  /** Node's thread id: 0 is the main thread, workers count from 1 in the order they started. */
  threadId: number | null;
  thread: string;
}

/** Node's default profile name, CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile, names the process and thread. */
export function profileThread(file: string): { pid: number | null; threadId: number | null; thread: string } {
  const m = /\.(\d+)\.(\d+)\.\d+\.cpuprofile$/.exec(path.basename(file));
  if (m === null) return { pid: null, threadId: null, thread: path.basename(file, ".cpuprofile") };
  const threadId = Number(m[2]);
  return { pid: Number(m[1]), threadId, thread: threadId === 0 ? "main" : `worker ${threadId}` };
}

/** Every .cpuprofile among the paths (a directory stands for the profiles in it), one summary per thread, main first. */
export function summariseProfiles(paths: readonly string[], top = 15): ThreadProfile[] {
  const files = paths.flatMap((p) =>
    statSync(p).isDirectory()
      ? readdirSync(p)
          .filter((f) => f.endsWith(".cpuprofile"))
          .map((f) => path.join(p, f))
      : [p],
  );
  return files
    .map((file) => {
      const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
      const t = profileThread(file);
      // A worker is known by its script: the first masq source with "worker" in its name that it ran.
      const script = t.threadId ? profile.nodes.map((n) => where(n.callFrame.url)).find((u) => /^(src|bin)\/.*worker[^/]*$/.test(u)) : undefined;
      return { file, ...t, thread: script ? `${t.thread} (${script})` : t.thread, ...summariseProfile(profile, top) };
    })
    .sort((a, b) => (a.pid ?? 0) - (b.pid ?? 0) || (a.threadId ?? 0) - (b.threadId ?? 0));
}

const pct = (share: number) => `${(share * 100).toFixed(1).padStart(5)}%`;

const share = (e: ProfileEntry) => `${e.name} ${(e.share * 100).toFixed(1)}%`;

/** Per thread: where its time goes by category, masq's own files, then its top functions. */
export function formatThreadProfiles(threads: readonly ThreadProfile[], topFunctions = 10): string {
  const out: string[] = [];
  for (const t of threads) {
    out.push(`${t.thread}${t.pid !== null ? ` (pid ${t.pid})` : ""}: ${(t.totalMs / 1000).toFixed(1)} s sampled · ${path.basename(t.file)}`);
    const shown = t.categories.filter((c) => c.share >= 0.005);
    const rest = t.categories.filter((c) => c.share < 0.005).reduce((a, c) => a + c.share, 0);
    out.push(`  by category: ${shown.map(share).join(", ")}${rest > 0 ? `, the rest ${(rest * 100).toFixed(1)}%` : ""}`);
    const own = t.groups.filter((g) => /^(src|bin)\//.test(g.name)).slice(0, 6);
    if (own.length > 0) out.push(`  masq's files: ${own.map(share).join(", ")}`);
    out.push("  top self time:");
    for (const f of t.functions.slice(0, topFunctions)) out.push(`    ${pct(f.share)}  ${f.name}  [${f.category}]`);
  }
  return out.join("\n");
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const at = args.indexOf("--top");
  const top = at >= 0 ? Number(args.splice(at, 2)[1]) : 25;
  if (args.length === 0 || !(top > 0)) {
    process.stderr.write("usage: node scripts/bench/profile-top.ts <file.cpuprofile | dir>… [--top 25]\n");
    process.exit(2);
  }
  const line = (e: ProfileEntry) => `${pct(e.share)}  ${e.ms.toFixed(0).padStart(6)} ms  ${e.name}`;
  for (const t of summariseProfiles(args, top)) {
    process.stdout.write(
      `== ${t.thread}${t.pid !== null ? ` (pid ${t.pid})` : ""}, ${t.file}: ${t.totalMs.toFixed(0)} ms sampled\n\n` +
        `self time by category:\n${t.categories.map(line).join("\n")}\n\nself time by function:\n${t.functions.map((f) => `${line(f)}  [${f.category}]`).join("\n")}\n\n` +
        `self time by package or file:\n${t.groups.slice(0, top).map(line).join("\n")}\n\n`,
    );
  }
}
