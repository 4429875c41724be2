import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, cpSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const skip = process.getuid?.() !== 0 ? "only root runs the embedded Postgres as another user" : false;

/**
 * A checkout as a fresh container or VM gives it to root: inside a 0700 directory (root's home, `mktemp -d`) that the
 * postgres user, which the embedded Postgres runs as, cannot enter. The sources are copied and node_modules is
 * hard-linked or copied (a symlink would resolve back to this checkout, which others can enter).
 */
describe("as root, from a checkout in a 0700 directory", { skip }, () => {
  let top: string;
  let checkout: string;
  before(() => {
    top = mkdtempSync(path.join(tmpdir(), "masq-private-"));
    assert.equal(statSync(top).mode & 0o777, 0o700);
    checkout = path.join(top, "masq");
    const skipped = new Set(["node_modules", ".git", ".masq-demo"]);
    cpSync(ROOT, checkout, { recursive: true, filter: (src) => !skipped.has(path.basename(src)) });
    // Hard links where the temp dir shares the checkout's file system, a copy where it does not.
    const linked = spawnSync("cp", ["-al", path.join(ROOT, "node_modules"), checkout]);
    if (linked.status !== 0) {
      rmSync(path.join(checkout, "node_modules"), { recursive: true, force: true });
      const copied = spawnSync("cp", ["-a", path.join(ROOT, "node_modules"), checkout]);
      assert.equal(copied.status, 0, String(copied.stderr));
    }
  });
  after(() => {
    chmodSync(top, 0o700);
    rmSync(top, { recursive: true, force: true });
  });

  const env = () => ({ PATH: process.env.PATH, HOME: process.env.HOME });

  test("the demo runs, and one line says where the binaries and the data went", () => {
    const r = spawnSync(process.execPath, ["bin/masq", "demo", "--messages", "300"], { cwd: checkout, env: env(), encoding: "utf8", timeout: 300_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /masq demo summary/);
    assert.match(r.stdout, /received\s+300/);
    const notes = r.stderr.split("\n").filter((l) => l.startsWith("masq: "));
    assert.equal(notes.length, 1, r.stderr);
    assert.match(notes[0]!, new RegExp(`cannot enter ${top}: its binaries are in /\\S+ and its data in /\\S+$`));
    assert.ok(!r.stderr.includes("    at "), r.stderr);
  });

  test("demo --keep keeps its data where the postgres user can reach it, and a second --keep finds it again", async () => {
    const keep = async () => {
      const child = spawn(process.execPath, ["bin/masq", "demo", "--messages", "100", "--keep"], { cwd: checkout, env: env() });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
      for (const until = Date.now() + 240_000; !out.includes("Press Ctrl-C") && child.exitCode === null && Date.now() < until; ) {
        await new Promise((r) => setTimeout(r, 200));
      }
      child.kill("SIGINT");
      assert.equal(await exited, 0, out);
      return out;
    };
    const first = await keep();
    assert.match(first, /table user_logins now holds/);
    const kept = /its data stays in (\S+)\)/.exec(first)?.[1];
    assert.ok(kept !== undefined && !kept.startsWith(top), first);
    const second = await keep();
    assert.match(second, new RegExp(`its data stays in ${kept}\\)`));
    const rows = (text: string) => Number(/now holds ([\d,]+)\)/.exec(text)?.[1]?.replace(/,/g, ""));
    assert.ok(rows(second) > rows(first), `the second run adds to the kept table:\n${second}`);
    rmSync(kept, { recursive: true, force: true });
  });

  test("the tests run there too (embedded Postgres, no DATABASE_URL)", () => {
    const r = spawnSync(process.execPath, ["--test", "--test-reporter=tap", "test/integration/migrate.test.ts"], {
      cwd: checkout,
      env: env(),
      encoding: "utf8",
      timeout: 300_000,
    });
    assert.equal(r.status, 0, r.stdout.slice(-3000) + r.stderr);
    assert.match(r.stdout, /^# fail 0$/m);
  });
});
