import assert from "node:assert/strict";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, describe, test } from "node:test";
import { assertMatchesSample, readDocBlocks, REPO_ROOT, runDocCommands, runShell } from "../helpers/doc-blocks.ts";
import { MASQ_BIN } from "../helpers/masq-process.ts";
import { runMasq } from "../helpers/run-masq.ts";

/**
 * `masq check --offline` and `masq preview`, as a reviewer runs them: no AWS and no Postgres in the environment
 * (no QUEUE_URL, DATABASE_URL or key), on the shipped contracts, broken files and docs/contracts.md's blocks.
 */
const dir = mkdtempSync(join(tmpdir(), "masq-contracts-"));
const binDir = join(dir, "bin");
symlinkSync(dirname(MASQ_BIN), binDir);
const PATH = `${binDir}:${dirname(process.execPath)}:${process.env.PATH ?? ""}`;
after(() => rmSync(dir, { recursive: true, force: true }));

const example = (name: string) => join(REPO_ROOT, "contracts", "examples", name);

describe("masq check --offline", () => {
  test("the shipped login contract, by default, without any other setting", async () => {
    const r = await runMasq(["check", "--offline"], {});
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^ok {4}contract: .*contracts\/login\.yaml: login → user_logins \(7 fields, unknown fields: drop\)\n$/);
    assert.equal(r.stderr, "");
  });

  test("MASQ_CONTRACT names the file; --contract wins over it", async () => {
    const byEnv = await runMasq(["check", "--offline"], { MASQ_CONTRACT: example("purchase.yaml") });
    assert.equal(byEnv.code, 0);
    assert.match(byEnv.stdout, /purchase → purchases/);
    const byFlag = await runMasq(["check", "--offline", "--contract", example("page-view.yaml")], { MASQ_CONTRACT: example("purchase.yaml") });
    assert.match(byFlag.stdout, /page_view → page_views/);
  });

  test("a broken file: every error with its line and column, exit 2", async () => {
    const file = join(dir, "two.yaml");
    writeFileSync(file, "version: 1\nevents:\n  a:\n    match: all\n    table: t\n    subject: x\n    unknown: maybe\n    fields:\n      x: { type: ip, treatment: keep, column: x, kind: ip }\n");
    const r = await runMasq(["check", "--offline", "--contract", file], {});
    assert.equal(r.code, 2);
    assert.equal(
      r.stdout,
      [
        `FAIL  contract: ${file}:6:14: event type a: subject x must be a string or an integer field`,
        `FAIL  contract: ${file}:7:14: event type a: unknown must be one of quarantine, drop, not maybe`,
        `FAIL  contract: ${file}:9:50: event type a, field x: kind does not apply to keep`,
        `3 errors in ${file}`,
        "",
      ].join("\n"),
    );
  });

  test("a file that is not there: one line naming the setting, exit 2", async () => {
    const r = await runMasq(["check", "--offline"], { MASQ_CONTRACT: join(dir, "absent.yaml") });
    assert.equal(r.code, 2);
    assert.match(r.stdout, /^FAIL {2}contract: invalid setting \(MASQ_CONTRACT\): cannot read .*absent\.yaml \(ENOENT\)/);
  });
});

describe("masq preview", () => {
  test("the login contract on samples: a row as stored with MASQ_PSEUDONYM_KEY, reasons for the rest", async () => {
    const key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const body = '{"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0", "device_type": "android", "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}';
    const r = await runMasq(["preview", "--sent-at", "2026-12-06T21:05:00Z"], { MASQ_PSEUDONYM_KEY: key }, `${body}\n\n{"user_id":"u"}\nnot json\n`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    const lines = r.stdout.trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(lines, [
      {
        line: 1,
        event: "login",
        table: "user_logins",
        row: {
          user_id: "424cdd21-063a-43a7-b91b-7ca1a833afae",
          device_type: "android",
          // The published HMAC vectors of test/unit/fixtures.ts, for this key.
          masked_device_id: "08257e30157faab67c5ff6ea2b011c511bc32af2e709c963f887ca97d49b7f96",
          masked_ip: "8884675af88fb989dbea9740053cb185c22b14672ef71318017b3b3b8df04b16",
          app_version: 2003000,
          locale: "RU",
          create_date: "2026-12-06",
        },
        vault: ["device_id", "ip"],
        key: "MASQ_PSEUDONYM_KEY",
      },
      { line: 3, quarantine: "missing_field", path: "device_type" },
      { line: 4, quarantine: "invalid_json", path: "" },
    ]);
    assert.ok(!r.stdout.includes("199.172.111.135") && !r.stdout.includes("593-47-5928"));
  });

  test("without MASQ_PSEUDONYM_KEY: the preview key, labelled on each line and on stderr", async () => {
    const r = await runMasq(["preview", "--contract", example("purchase.yaml")], {}, '{"type":"purchase","order_id":"o","customer_id":"c","email":"e@example.com","card":{"last4":"1234"},"amount_cents":1,"currency":"EUR","ordered_at":"2026-12-06T21:00:00Z"}\n');
    assert.equal(r.code, 0);
    assert.match(r.stderr, /^masq: preview: pseudonyms use a public preview key, not the stored ones/);
    assert.equal((JSON.parse(r.stdout) as { key: string }).key, "preview");
  });

  test("a broken contract: its errors on stderr, exit 2, nothing read", async () => {
    const file = join(dir, "bad.yaml");
    writeFileSync(file, "version: 1\nevents: {}\n");
    const r = await runMasq(["preview", "--contract", file], {}, "{}\n");
    assert.equal(r.code, 2);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr, `masq: ${file}:2:9: events must map each event type's name to its definition\n`);
  });

  test("a bad --sent-at: one line naming the flag, exit 2", async () => {
    const r = await runMasq(["preview", "--sent-at", "yesterday"], {});
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^masq: .*--sent-at.*ISO 8601/);
  });
});

describe("docs/contracts.md", () => {
  test("the check and preview blocks run and print their samples", async () => {
    const env = { PATH, HOME: process.env.HOME };
    const checks = await runDocCommands("contracts-check", { env });
    for (const c of checks) assert.equal(c.code, 0, `${c.command}: ${c.stdout}${c.stderr}`);
    assertMatchesSample("contracts-check", checks.map((c) => c.stdout).join("").trimEnd());
    const [purchase] = await runDocCommands("contracts-preview-purchase", { env });
    assert.equal(purchase!.code, 0, purchase!.stderr);
    assertMatchesSample("contracts-preview-purchase", purchase!.stdout.trimEnd());
    const [pageView] = await runDocCommands("contracts-preview-page-view", { env });
    assert.equal(pageView!.code, 0, pageView!.stderr);
    assertMatchesSample("contracts-preview-page-view", pageView!.stdout.trimEnd());
  });

  test("the broken file it shows gives the errors it shows", async () => {
    const broken = readDocBlocks().filter((b) => b.file === "docs/contracts.md" && b.lang === "yaml" && b.text.includes("pseudonymise"));
    assert.equal(broken.length, 1);
    writeFileSync(join(dir, "broken.yaml"), broken[0]!.text);
    const inDir = await runShell("masq check --offline --contract broken.yaml", { env: { PATH, HOME: process.env.HOME }, cwd: dir });
    assert.equal(inDir.code, 2);
    assertMatchesSample("contracts-check-broken", inDir.stdout.trimEnd());
  });
});
