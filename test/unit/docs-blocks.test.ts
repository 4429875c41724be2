import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { blockCommands, readDocBlocks, REPO_ROOT, SHELL_LANGUAGES, where } from "../helpers/doc-blocks.ts";

/**
 * Docs that run: every shell block of README.md, SECURITY.md and docs/*.md is executed by a test, run by .ci/run, or
 * marked as not runnable here with the reason. test/helpers/doc-blocks.ts describes the markers.
 */
const blocks = readDocBlocks();
const shellBlocks = blocks.filter((b) => SHELL_LANGUAGES.has(b.lang));

/** What the test files (other than the helper itself) claim: run ids and sample ids they pass to the helper. */
function claims(): { runs: Map<string, string>; samples: Map<string, string> } {
  const runs = new Map<string, string>();
  const samples = new Map<string, string>();
  const walk = (dir: string): string[] =>
    readdirSync(`${REPO_ROOT}${dir}`, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(`${dir}/${e.name}`) : e.name.endsWith(".ts") ? [`${dir}/${e.name}`] : [],
    );
  for (const file of walk("test")) {
    if (file === "test/helpers/doc-blocks.ts") continue;
    const text = readFileSync(`${REPO_ROOT}${file}`, "utf8");
    for (const m of text.matchAll(/\b(?:runDocBlock|runDocCommands|runDocSql|docBlock)\(\s*"([^"]+)"(\s*,\s*"sample")?/g)) (m[2] ? samples : runs).set(m[1]!, file);
    for (const m of text.matchAll(/\bassertMatchesSample\(\s*"([^"]+)"/g)) samples.set(m[1]!, file);
  }
  return { runs, samples };
}

test("the documentation has shell blocks to check (the extractor finds them)", () => {
  assert.ok(shellBlocks.length >= 15, `only ${shellBlocks.length} shell blocks found`);
  for (const f of ["README.md", "SECURITY.md", "docs/deploy.md"]) assert.ok(shellBlocks.some((b) => b.file === f), `no shell block found in ${f}`);
});

test("every shell block is run by a test, run by .ci/run, or marked not runnable here with a reason", () => {
  const unmarked = shellBlocks.filter((b) => b.marker === undefined || b.marker.kind === "sample");
  assert.deepEqual(
    unmarked.map((b) => `${where(b)} (${b.badMarker ? `unreadable marker ${b.badMarker}` : "no marker"}): ${b.text.split("\n")[0]}`),
    [],
    "Put <!-- run: <id> --> (and run it from a test), <!-- run-by: .ci/run --> or <!-- not-run: <reason> --> on the line before each of these blocks",
  );
  for (const b of shellBlocks) {
    if (b.marker?.kind === "not-run" || b.marker?.kind === "pending") {
      assert.ok(b.marker.value.split(/\s+/).length >= 2, `${where(b)}: say why the block is ${b.marker.kind} (a few words at least)`);
    }
  }
});

test("no block has a marker that does not parse", () => {
  assert.deepEqual(
    blocks.filter((b) => b.badMarker !== undefined).map((b) => `${where(b)}: ${b.badMarker}`),
    [],
  );
});

test("every <!-- run: id --> block is executed by a test, and every id a test runs is in the docs", () => {
  const { runs } = claims();
  const marked = blocks.filter((b) => b.marker?.kind === "run");
  const ids = marked.map((b) => b.marker!.value);
  assert.deepEqual(ids.filter((id, i) => ids.indexOf(id) !== i), [], "run ids must be unique");
  assert.deepEqual(
    marked.filter((b) => !runs.has(b.marker!.value)).map((b) => `${where(b)}: ${b.marker!.value}`),
    [],
    "these blocks are marked run but no test runs them (runDocBlock/runDocCommands/runDocSql/docBlock with the id)",
  );
  assert.deepEqual(
    [...runs].filter(([id]) => !ids.includes(id)).map(([id, file]) => `${file}: ${id}`),
    [],
    "these tests run a block id that no documentation block carries",
  );
});

test("every <!-- sample: id --> block is compared with real output by a test", () => {
  const { samples } = claims();
  const marked = blocks.filter((b) => b.marker?.kind === "sample");
  assert.ok(marked.length >= 2, "the status and demo samples carry sample markers");
  assert.deepEqual(
    marked.filter((b) => !samples.has(b.marker!.value)).map((b) => `${where(b)}: ${b.marker!.value}`),
    [],
    "no test compares these samples with real output (assertMatchesSample, or docBlock(id, \"sample\"), with the id)",
  );
  const ids = new Set(marked.map((b) => b.marker!.value));
  assert.deepEqual([...samples].filter(([id]) => !ids.has(id)).map(([id, file]) => `${file}: ${id}`), []);
});

test("a <!-- run-by: script --> block's commands are lines of that script, exactly as written", () => {
  const byScript = shellBlocks.filter((b) => b.marker?.kind === "run-by");
  for (const b of byScript) {
    const script = b.marker!.value;
    let text: string;
    try {
      text = readFileSync(`${REPO_ROOT}${script}`, "utf8");
    } catch {
      assert.fail(`${where(b)}: run-by names ${script}, which does not exist`);
    }
    const lines = new Set(text.split("\n").map((l) => l.replace(/\s+#.*$/, "").trim()));
    for (const command of blockCommands(b.text)) {
      const bare = command.replace(/\s+#.*$/, "").trim();
      assert.ok(lines.has(bare), `${where(b)}: \`${bare}\` is not a line of ${script}, so nothing runs it as written`);
    }
  }
});

for (const b of shellBlocks.filter((x) => x.marker?.kind === "pending")) {
  test(`${where(b)} runs in a test (${b.marker!.value})`, { todo: b.marker!.value }, () => {});
}

