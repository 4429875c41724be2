import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { assertEnterableByOthers } from "../../src/demo/embedded.ts";

test("the embedded Postgres's binaries must be reachable by another user: a 0700 directory above them is named", () => {
  const top = mkdtempSync(path.join(tmpdir(), "masq-reach-"));
  try {
    const file = path.join(top, "m", "node_modules", "initdb");
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, "");
    chmodSync(top, 0o755);
    assertEnterableByOthers(file);
    chmodSync(top, 0o700);
    assert.throws(() => assertEnterableByOthers(file), (err: Error) => err.message.includes(`cannot enter ${top};`) && /chmod o\+x/.test(err.message));
  } finally {
    chmodSync(top, 0o755);
    rmSync(top, { recursive: true, force: true });
  }
});
