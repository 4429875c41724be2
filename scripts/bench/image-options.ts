import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The Node options masq's container image runs with, read from the Dockerfile itself so that the benchmark's
 * memory figure stays the image's when the Dockerfile changes: NODE_OPTIONS from its ENV instructions (the last one
 * wins, as in Docker), followed by any flags its ENTRYPOINT gives `node` before the script.
 */
export interface ImageNodeOptions {
  /** What masq's process gets as NODE_OPTIONS to run as in the image (may be ""). */
  nodeOptions: string;
  /** The script the image's ENTRYPOINT runs (e.g. "bin/masq"), relative to the repository; null if not `node <script>`. */
  script: string | null;
}

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const DOCKERFILE = `${REPO_ROOT}Dockerfile`;

/** Dockerfile instructions with their line continuations joined and comments dropped. */
function instructions(text: string): { keyword: string; args: string }[] {
  const out: { keyword: string; args: string }[] = [];
  let current = "";
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (current === "" && /^\s*#/.test(line)) continue;
    if (current !== "" && /^\s*#/.test(line)) continue; // comments inside a continued instruction
    if (line.endsWith("\\")) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    current += line;
    const m = /^\s*([A-Za-z]+)\s+([\s\S]*)$/.exec(current);
    if (m) out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.trim() });
    current = "";
  }
  return out;
}

/** ENV's `key=value` pairs (values may be quoted), or the legacy `ENV key value` form. */
function envPairs(args: string): Map<string, string> {
  const pairs = new Map<string, string>();
  if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(args)) {
    const m = /^(\S+)\s+(.*)$/.exec(args);
    if (m) pairs.set(m[1]!, m[2]!);
    return pairs;
  }
  for (const m of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("((?:[^"\\]|\\.)*)"|'([^']*)'|(\S*))/g)) {
    pairs.set(m[1]!, m[3] !== undefined ? m[3].replace(/\\(.)/g, "$1") : (m[4] ?? m[5] ?? ""));
  }
  return pairs;
}

/** An exec-form (JSON array) or shell-form command as words. */
function words(args: string): string[] {
  if (args.startsWith("[")) {
    try {
      return (JSON.parse(args) as unknown[]).map(String);
    } catch {
      return [];
    }
  }
  return args.split(/\s+/).filter(Boolean);
}

export function parseImageNodeOptions(dockerfile: string): ImageNodeOptions {
  // Only the final stage is the image; earlier stages' ENV does not reach it.
  const all = instructions(dockerfile);
  const lastFrom = all.map((i) => i.keyword).lastIndexOf("FROM");
  const stage = all.slice(lastFrom + 1);
  let envOptions = "";
  let entrypoint: string[] = [];
  for (const i of stage) {
    if (i.keyword === "ENV") envOptions = envPairs(i.args).get("NODE_OPTIONS") ?? envOptions;
    if (i.keyword === "ENTRYPOINT") entrypoint = words(i.args);
  }
  let script: string | null = null;
  const flags: string[] = [];
  if (entrypoint[0] === "node" || entrypoint[0]?.endsWith("/node")) {
    for (const w of entrypoint.slice(1)) {
      if (w.startsWith("-")) flags.push(w);
      else {
        script = w;
        break;
      }
    }
  }
  return { nodeOptions: [envOptions, ...flags].filter(Boolean).join(" "), script };
}

/** The image's options from this checkout's Dockerfile. */
export function readImageNodeOptions(): ImageNodeOptions {
  return parseImageNodeOptions(readFileSync(DOCKERFILE, "utf8"));
}

export interface ImageLayout {
  /** The masq to spawn: the image's entry script inside the layout, or this checkout's bin/masq. */
  bin: string;
  /** What it is, for the report: "compiled (dist/, as the image)" or "sources (bin/masq, type stripping)". */
  describe: string;
  close(): void;
}

const BUILD_CONFIG = `${REPO_ROOT}tsconfig.build.json`;

/**
 * masq laid out as the image lays it out, when the image ships compiled JavaScript (tsconfig.build.json exists):
 * dist/ compiled from src/, bin/, migrations/ and package.json in a temporary directory without src/, node_modules
 * linked from the checkout; its bin/masq then runs dist/. Without a build config the image runs the sources, and so
 * does this: the checkout's own entry script.
 */
export function prepareImageLayout(image: ImageNodeOptions): ImageLayout {
  const script = image.script ?? "bin/masq";
  if (!existsSync(BUILD_CONFIG)) return { bin: path.join(REPO_ROOT, script), describe: `sources (${script}, type stripping)`, close: () => undefined };
  const app = mkdtempSync(path.join(tmpdir(), "masq-bench-image-"));
  execFileSync(process.execPath, [path.join(REPO_ROOT, "node_modules/typescript/bin/tsc"), "-p", BUILD_CONFIG, "--outDir", path.join(app, "dist")], { stdio: ["ignore", "ignore", "inherit"] });
  for (const dir of ["bin", "migrations"]) cpSync(path.join(REPO_ROOT, dir), path.join(app, dir), { recursive: true });
  cpSync(path.join(REPO_ROOT, "package.json"), path.join(app, "package.json"));
  symlinkSync(path.join(REPO_ROOT, "node_modules"), path.join(app, "node_modules"));
  return { bin: path.join(app, script), describe: `compiled (dist/ from tsconfig.build.json, run by ${script}, as the image)`, close: () => rmSync(app, { recursive: true, force: true }) };
}
