import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { freePort } from "../../src/ops/demo.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const MASQ = path.join(ROOT, "bin", "masq");

/** A Node older than masq supports on this machine (the distribution's), and a PATH where it and its npm come first. */
function oldNode(): { node: string; env: NodeJS.ProcessEnv } | undefined {
  for (const node of ["/usr/bin/node", "/bin/node", "/usr/local/bin/node"]) {
    const r = spawnSync(node, ["-p", "process.versions.node"], { encoding: "utf8" });
    if (r.status !== 0) continue;
    const [major, minor] = r.stdout.trim().split(".").map(Number) as [number, number];
    if (major < 22 || (major === 22 && minor < 18)) {
      return { node, env: { PATH: `${path.dirname(node)}:/usr/bin:/bin`, HOME: process.env.HOME, npm_config_cache: process.env.npm_config_cache } };
    }
  }
  return undefined;
}

const old = oldNode();
const registryUp = old !== undefined && spawnSync("npm", ["ping"], { env: old.env, timeout: 30_000 }).status === 0;
const skip = old === undefined ? "no Node older than 22.18 on this machine" : !registryUp ? "the npm registry is not reachable" : false;

function stderrLines(text: string): string[] {
  return text.split("\n").filter((l) => l.trim() !== "");
}

test("under the system's old Node, bin/masq --help runs under a Node fetched through npm, saying so in one line", { skip }, () => {
  const r = spawnSync(old!.node, [MASQ, "--help"], { env: old!.env, encoding: "utf8", timeout: 600_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /Usage: masq/);
  assert.equal(stderrLines(r.stderr).length, 1, r.stderr);
  assert.match(r.stderr, /^masq: Node v\d+\.\d+\.\d+ is older than 22\.18, which masq needs; running under v2[4-9]\./);
  assert.ok(!r.stderr.includes("    at "), r.stderr);
});

test("under the system's old Node, the npm scripts' launcher runs node --test under a supported Node", { skip }, () => {
  const r = spawnSync(old!.node, [path.join(ROOT, "bin", "supported-node.js"), "--test", "--test-reporter=tap", "test/unit/login-event.test.ts"], {
    cwd: ROOT,
    env: old!.env,
    encoding: "utf8",
    timeout: 600_000,
  });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^# pass [1-9]\d*$/m);
  assert.match(r.stdout, /^# fail 0$/m);
});

test("under an old Node without the npm registry: one line with the fix, exit 1, no stack trace", { skip: old === undefined ? "no Node older than 22.18 on this machine" : false }, async () => {
  // A copy of bin/ alone: no cached Node 24 beside it, and an npm cache of its own, so npx must ask the registry.
  const dir = mkdtempSync(path.join(tmpdir(), "masq-oldnode-"));
  try {
    cpSync(path.join(ROOT, "bin"), path.join(dir, "bin"), { recursive: true });
    const closed = await freePort();
    const env = { ...old!.env, npm_config_cache: path.join(dir, "npm-cache"), npm_config_registry: `http://127.0.0.1:${closed}/` };
    const r = spawnSync(old!.node, [path.join(dir, "bin", "masq"), "--help"], { env, encoding: "utf8", timeout: 120_000 });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.equal(r.stdout, "");
    assert.equal(stderrLines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /older than 22\.18.*could not be fetched from the npm registry.*install Node 22\.18\+/);
    assert.ok(!r.stderr.includes("    at "), r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
