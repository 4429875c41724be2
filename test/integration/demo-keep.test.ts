import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { INTERNALS, runMasq, stderrLines } from "../helpers/masq-run.ts";
import { waitFor } from "../helpers/pipeline.ts";

test("masq demo --keep started a second time in the same directory says so, in words", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "masq-demo-keep-"));
  // As root the embedded Postgres runs as the postgres user, which must be able to enter the directory.
  chmodSync(dir, 0o755);
  const env = { PATH: process.env.PATH, HOME: process.env.HOME };
  let second: Awaited<ReturnType<typeof runMasq>> | undefined;
  try {
    const first = await runMasq(["demo", "--keep", "--messages", "50"], env, {
      cwd: dir,
      killAfterMs: 180_000,
      during: (child, out) =>
        void waitFor(() => out.stdout.includes("Press Ctrl-C"), 150_000, "the first demo to keep its database")
          .then(async () => {
            second = await runMasq(["demo", "--keep", "--messages", "50"], env, { cwd: dir, killAfterMs: 60_000 });
          })
          .finally(() => child.kill("SIGINT")),
    });
    assert.equal(first.code, 0, first.stderr);
    assert.ok(second !== undefined, "the second demo ran");
    assert.equal(second.code, 1, second.stderr);
    const last = stderrLines(second).at(-1) ?? "";
    assert.match(last, /^masq: another masq demo --keep is still running on this directory \(.*\.masq-demo\/postgres, Postgres pid \d+\): /);
    assert.ok(!INTERNALS.test(second.stderr), second.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
