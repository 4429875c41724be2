/**
 * Summarises a V8 CPU profile (.cpuprofile, as written by `npm run bench -- --cpu-prof <dir>`): the functions with
 * the most self time, and self time grouped by package or source file.
 *
 *   node scripts/bench/profile-top.ts <file.cpuprofile> [top=25]
 */
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
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

export function summariseProfile(p: Profile, top = 25): { totalMs: number; functions: ProfileEntry[]; groups: ProfileEntry[] } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let total = 0;
  p.samples.forEach((id, i) => {
    const dt = p.timeDeltas[i] ?? 0;
    total += dt;
    self.set(id, (self.get(id) ?? 0) + dt);
  });
  const fns = new Map<string, number>();
  const groups = new Map<string, number>();
  for (const [id, t] of self) {
    const cf = byId.get(id)!.callFrame;
    const name = `${cf.functionName || "(anonymous)"}${cf.url ? ` ${where(cf.url)}:${cf.lineNumber + 1}` : ""}`;
    fns.set(name, (fns.get(name) ?? 0) + t);
    const g = group(cf.url, cf.functionName);
    groups.set(g, (groups.get(g) ?? 0) + t);
  }
  const rank = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, t]) => ({ name, share: t / total, ms: t / 1000 }));
  return { totalMs: total / 1000, functions: rank(fns), groups: rank(groups) };
}

if (import.meta.main) {
  const file = process.argv[2];
  if (file === undefined) {
    process.stderr.write("usage: node scripts/bench/profile-top.ts <file.cpuprofile> [top]\n");
    process.exit(2);
  }
  const s = summariseProfile(JSON.parse(readFileSync(file, "utf8")) as Profile, Number(process.argv[3] ?? 25));
  const line = (e: ProfileEntry) => `${(e.share * 100).toFixed(1).padStart(5)}%  ${e.ms.toFixed(0).padStart(6)} ms  ${e.name}`;
  process.stdout.write(`${s.totalMs.toFixed(0)} ms sampled\n\nself time by function:\n${s.functions.map(line).join("\n")}\n\nself time by package or file:\n${s.groups.map(line).join("\n")}\n`);
}
