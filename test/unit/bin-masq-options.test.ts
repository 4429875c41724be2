import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";

const MASQ = fileURLToPath(new URL("../../bin/masq", import.meta.url));
const dir = mkdtempSync(path.join(tmpdir(), "masq-options-"));
after(() => rmSync(dir, { recursive: true, force: true }));
// Preloaded into masq's Node: says on stderr how large V8 lets the main isolate's heap grow.
const preload = path.join(dir, "heap-limit.cjs");
writeFileSync(preload, 'process.stderr.write(`heap limit ${require("v8").getHeapStatistics().heap_size_limit >>> 20} MB\\n`);\n');

/** The heap limit of `bin/masq --version` run as a command (its shell line starts Node), with this NODE_OPTIONS. */
function heapLimitMb(nodeOptions: string): number {
  const env = { PATH: `${path.dirname(process.execPath)}:${process.env.PATH}`, HOME: process.env.HOME, NODE_OPTIONS: `--require ${preload} ${nodeOptions}` };
  const r = spawnSync(MASQ, ["--version"], { env, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const m = /heap limit (\d+) MB/.exec(r.stderr);
  assert.ok(m, r.stderr);
  return Number(m[1]);
}

test("bin/masq run as a command takes the container image's memory options (384 MB old space, 8 MB semi-spaces)", () => {
  // 384 MB old space + 3 × 8 MB young generation: V8 reports 408 MB. Node's default is 2 GB and more.
  assert.equal(heapLimitMb(""), 408);
});

test("a space size in NODE_OPTIONS wins over bin/masq's", () => {
  assert.ok(heapLimitMb("--max-old-space-size=1000") >= 1000);
});
