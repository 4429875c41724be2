import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type pg from "pg";

/**
 * The fenced code blocks of masq's documentation, and how the tests run them.
 *
 * Every shell block (```sh, ```bash, ```shell, ```console) in README.md, SECURITY.md and docs/*.md carries a marker,
 * an HTML comment on the line before its fence (blank lines between are allowed):
 *
 *   <!-- run: <id> -->           a test executes this block, found by its id (runDocBlock / runDocCommands; an SQL
 *                                block with runDocSql)
 *   <!-- run-by: .ci/run -->     .ci/run runs each command of this block literally (test/unit/docs-blocks.test.ts
 *                                checks that every command line is a line of .ci/run)
 *   <!-- not-run: <reason> -->   not runnable here, with the reason (needs Docker, an AWS account, …)
 *   <!-- pending: <TODO> -->     runnable here but not wired to a test yet; listed as a TODO in the test report
 *
 * An output block (no language) may carry `<!-- sample: <id> -->`: a test compares it with the real output of the
 * command it shows (assertMatchesSample), so a sample cannot go stale.
 */
export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

export const SHELL_LANGUAGES = new Set(["sh", "bash", "shell", "console", "zsh"]);

export type MarkerKind = "run" | "run-by" | "not-run" | "pending" | "sample";

export interface DocBlock {
  /** Path relative to the repository root, e.g. "docs/operations.md". */
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  /** The block's content, its indentation removed. */
  text: string;
  marker: { kind: MarkerKind; value: string } | undefined;
  /** A marker-like comment before the fence that did not parse (a typo such as `<!-- notrun … -->`). */
  badMarker: string | undefined;
}

/** The documentation files whose blocks are checked. */
export function docFiles(): string[] {
  const docs = readdirSync(new URL("docs/", `file://${REPO_ROOT}`))
    .filter((f) => f.endsWith(".md"))
    .sort()
    .map((f) => `docs/${f}`);
  return ["README.md", "SECURITY.md", ...docs];
}

const FENCE = /^(\s*)(`{3,}|~{3,})\s*([\w-]*)/;
const MARKER = /^\s*<!--\s*(run|run-by|not-run|pending|sample):\s*(.*?)\s*-->\s*$/;

export function parseBlocks(file: string, markdown: string): DocBlock[] {
  const lines = markdown.split("\n");
  const blocks: DocBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i]!);
    if (!open) continue;
    const [, indent, fence, lang] = open as unknown as [string, string, string, string];
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const l = lines[j]!;
      if (l.trimStart().startsWith(fence) && l.trim().replace(/[`~]/g, "") === "") break;
      body.push(l.startsWith(indent) ? l.slice(indent.length) : l.trimStart());
    }
    let k = i - 1;
    while (k >= 0 && lines[k]!.trim() === "") k--;
    const before = k >= 0 ? lines[k]! : "";
    const m = MARKER.exec(before);
    blocks.push({
      file,
      line: i + 1,
      lang: lang.toLowerCase(),
      text: body.join("\n"),
      marker: m ? { kind: m[1] as MarkerKind, value: m[2]! } : undefined,
      badMarker: !m && /^\s*<!--\s*(run|not|pending|sample|skip|norun)/i.test(before) ? before.trim() : undefined,
    });
    i = j;
  }
  return blocks;
}

export function readDocBlocks(): DocBlock[] {
  return docFiles().flatMap((f) => parseBlocks(f, readFileSync(`${REPO_ROOT}${f}`, "utf8")));
}

export function where(b: DocBlock): string {
  return `${b.file}:${b.line}`;
}

/** The block marked `<!-- <kind>: <id> -->`; fails the calling test, naming the id, when there is none. */
export function docBlock(id: string, kind: "run" | "sample" = "run"): DocBlock {
  const found = readDocBlocks().filter((b) => b.marker?.kind === kind && b.marker.value === id);
  assert.equal(found.length, 1, `expected exactly one documentation block marked <!-- ${kind}: ${id} --> (found ${found.length})`);
  return found[0]!;
}

/**
 * Replaces documented placeholders (`<port>`, `6f1b…`) with real values. Every key must occur in the block: a doc
 * edit that drops a placeholder fails here, by name, instead of running something else.
 */
export function substitute(block: DocBlock, values: Record<string, string>): string {
  let text = block.text;
  for (const [from, to] of Object.entries(values)) {
    assert.ok(text.includes(from), `${where(block)}: the block no longer contains ${JSON.stringify(from)}; update the test that runs it`);
    text = text.split(from).join(to);
  }
  return text;
}

/** Commands of a shell block: comments and blank lines dropped, backslash continuations joined. */
export function blockCommands(text: string): string[] {
  const out: string[] = [];
  let current = "";
  for (const raw of text.split("\n")) {
    const line = current === "" ? raw.trim() : raw.trim();
    if (current === "" && (line === "" || line.startsWith("#"))) continue;
    if (line.endsWith("\\")) {
      current += line.slice(0, -1).trimEnd() + " ";
      continue;
    }
    out.push((current + line).trim());
    current = "";
  }
  if (current !== "") out.push(current.trim());
  return out;
}

export interface ShellResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env: NodeJS.ProcessEnv;
  /** Working directory; the repository root by default (blocks say ./bin/masq). */
  cwd?: string;
  /** Placeholder → value, see substitute(). */
  values?: Record<string, string>;
  stdin?: string;
  timeoutMs?: number;
}

export function runShell(script: string, opts: RunOptions): Promise<ShellResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", script], { cwd: opts.cwd ?? REPO_ROOT, env: opts.env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 120_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.stdin ?? "");
  });
}

/** Runs a `<!-- run: id -->` block as one bash script (set -euo pipefail), with the given environment. */
export function runDocBlock(id: string, opts: RunOptions): Promise<ShellResult> {
  const block = docBlock(id);
  return runShell(`set -euo pipefail\n${substitute(block, opts.values ?? {})}`, opts);
}

/** Runs each command of a `<!-- run: id -->` block on its own, for blocks whose commands have exit codes of their own. */
export async function runDocCommands(id: string, opts: RunOptions): Promise<(ShellResult & { command: string })[]> {
  const block = docBlock(id);
  const results: (ShellResult & { command: string })[] = [];
  for (const command of blockCommands(substitute(block, opts.values ?? {}))) {
    results.push({ command, ...(await runShell(`set -o pipefail\n${command}`, opts)) });
  }
  return results;
}

/** Runs a `<!-- run: id -->` SQL block (several statements in one simple query); one result per statement. */
export async function runDocSql(id: string, client: pg.Client, values: Record<string, string> = {}): Promise<pg.QueryResult[]> {
  const result = (await client.query(substitute(docBlock(id), values))) as unknown as pg.QueryResult | pg.QueryResult[];
  return Array.isArray(result) ? result : [result];
}

/**
 * A sample's shape against real output. Numbers, 64-hex pseudonyms, timestamps and URLs are wildcards; a line that
 * is only `…` in the sample stands for any number of lines. Everything else (labels, order, the lines themselves)
 * must be the same, so a sample that lacks a section the command prints, or shows one it no longer prints, fails.
 */
export function assertMatchesSample(id: string, output: string): void {
  const block = docBlock(id, "sample");
  const sample = shape(block.text);
  const real = shape(output);
  let r = 0;
  for (let s = 0; s < sample.length; s++) {
    if (sample[s] === "…") {
      const next = sample[s + 1];
      if (next === undefined) return;
      while (r < real.length && real[r] !== next) r++;
      continue;
    }
    assert.equal(
      real[r],
      sample[s],
      `${where(block)}: the sample <!-- sample: ${id} --> is out of date at its line ${s + 1}; regenerate it from this output:\n${output}`,
    );
    r++;
  }
  assert.equal(r, real.length, `${where(block)}: the command prints lines the sample <!-- sample: ${id} --> lacks:\n${real.slice(r).join("\n")}`);
}

function shape(text: string): string[] {
  return text
    .split("\n")
    .map((l) =>
      l
        .replace(/https?:\/\/\S+/g, "<url>")
        .replace(/\b\d{4}-\d{2}-\d{2}T[\d:.]+Z\b/g, "<time>")
        .replace(/\b[0-9a-f]{64}\b/g, "<hex>")
        .replace(/\d[\d,.]*/g, "#")
        .replace(/\s+/g, " ")
        .trim(),
    )
    .filter((l) => l !== "");
}
