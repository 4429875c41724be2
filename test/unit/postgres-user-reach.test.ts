import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { blockedDirectory, ownedDirectory } from "../../src/ops/postgres-user-reach.ts";

test("the first directory another user cannot enter is named; none when all can be entered", () => {
  const top = mkdtempSync(path.join(tmpdir(), "masq-reach-"));
  try {
    const bin = path.join(top, "m", "node_modules", "native", "bin");
    mkdirSync(bin, { recursive: true });
    chmodSync(top, 0o755);
    assert.equal(blockedDirectory(bin), undefined);
    chmodSync(top, 0o700);
    assert.equal(blockedDirectory(bin), top);
    chmodSync(path.join(top, "m"), 0o700);
    assert.equal(blockedDirectory(bin), path.join(top, "m"));
  } finally {
    chmodSync(top, 0o755);
    rmSync(top, { recursive: true, force: true });
  }
});

test("a masq directory under a shared temp dir is made 0755, and one planted by someone else is refused", () => {
  const top = mkdtempSync(path.join(tmpdir(), "masq-owned-"));
  try {
    const made = ownedDirectory(path.join(top, "made"));
    assert.equal(made, path.join(top, "made"));
    assert.equal(ownedDirectory(made), made, "found again");
    const writable = path.join(top, "writable");
    mkdirSync(writable);
    chmodSync(writable, 0o777);
    assert.throws(() => ownedDirectory(writable), /is not a directory that only masq's user owns and can write; remove it/);
    const link = path.join(top, "link");
    symlinkSync(made, link);
    assert.throws(() => ownedDirectory(link), /remove it/);
  } finally {
    rmSync(top, { recursive: true, force: true });
  }
});
