import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { KNOWN_SETTINGS, nearestSetting, unknownSettingWarnings } from "../../src/settings/derived.ts";

const SRC = fileURLToPath(new URL("../../src/", import.meta.url));
const MASQ = fileURLToPath(new URL("../../bin/masq", import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith(".ts") ? [p] : [];
  });
}

describe("unknown MASQ_* variables", () => {
  test("every MASQ_* name in src/ is a known setting (declare new settings in src/settings/spec.ts)", () => {
    // settings/derived.ts names the harness prefixes and a typo in its comments.
    const files = sources(SRC).filter((f) => !f.endsWith(path.join("settings", "derived.ts")));
    const used = new Set(files.flatMap((f) => readFileSync(f, "utf8").match(/MASQ_[A-Z0-9_]*[A-Z0-9]/g) ?? []));
    const unknown = [...used].filter((n) => !KNOWN_SETTINGS.includes(n));
    assert.deepEqual(unknown, []);
  });

  const typos: [typo: string, meant: string][] = [
    ["MASQ_RECIEVERS", "MASQ_RECEIVERS"],
    ["MASQ_BATCHSIZE", "MASQ_BATCH_SIZE"],
    ["MASQ_MASTERKEY", "MASQ_MASTER_KEY"],
    ["MASQ_HTTP_PROT", "MASQ_HTTP_PORT"],
    ["MASQ_WRITER", "MASQ_WRITERS"],
    ["MASQ_KMS_KEY", "MASQ_KMS_KEY_ID"],
  ];
  for (const [typo, meant] of typos) {
    test(`${typo} suggests ${meant}`, () => {
      assert.equal(nearestSetting(typo), meant);
      assert.deepEqual(unknownSettingWarnings({ [typo]: "1" }), [`masq: warning: unknown setting ignored (${typo}): did you mean ${meant}?`]);
    });
  }

  test("a name near nothing gets no guess; known names, harness names and other variables get no warning", () => {
    assert.deepEqual(unknownSettingWarnings({ MASQ_SOMETHING_ELSE_ENTIRELY: "1" }), ["masq: warning: unknown setting ignored (MASQ_SOMETHING_ELSE_ENTIRELY): no such setting; docs/configuration.md lists them all"]);
    assert.deepEqual(unknownSettingWarnings({ MASQ_RECEIVERS: "1", MASQ_TEST_REQUIRE_MOTO: "1", PATH: "/bin", RECIEVERS: "1" }), []);
  });

  test("the CLI warns on stderr, and the value is never printed", () => {
    const r = spawnSync(process.execPath, [MASQ, "--version"], { env: { MASQ_RECIEVERS: "secret-ish-value" }, encoding: "utf8" });
    assert.equal(r.status, 0);
    assert.equal(r.stderr, "masq: warning: unknown setting ignored (MASQ_RECIEVERS): did you mean MASQ_RECEIVERS?\n");
    assert.ok(!r.stderr.includes("secret-ish-value"));
  });
});
