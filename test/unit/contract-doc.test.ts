import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { defaultContract, loadContract, type EventSpec } from "../../src/contracts/contract.ts";
import { createPseudonymizer, type PiiKind } from "../../src/ingest/pseudonymize.ts";
import { redactBody } from "../../src/ingest/quarantine-body.ts";
import { columnsTable, quarantineFields, withContractTables } from "../../scripts/contract-doc.ts";
import { REPO_ROOT } from "../helpers/doc-blocks.ts";
import { TEST_KEY } from "./fixtures.ts";

/**
 * SECURITY.md's tables of what the login event keeps in clear are made from contracts/login.yaml, and what they say
 * of the quarantine is what the redaction does (its allowlist is written in ingest/quarantine-body.ts, not read
 * from the contract, so the two are compared here).
 */
const login = defaultContract().events[0]!;

test("SECURITY.md's tables of the login event are the ones made from contracts/login.yaml", () => {
  const security = readFileSync(`${REPO_ROOT}SECURITY.md`, "utf8");
  assert.equal(security, withContractTables(security), "run: node scripts/contract-doc.ts");
});

test("the redacted copy of a quarantined body keeps in clear or pseudonymises exactly the top-level fields the generated table names", () => {
  const p = createPseudonymizer(TEST_KEY);
  const shown = quarantineFields(login);
  assert.deepEqual(shown.map((f) => f.path), ["user_id", "device_type", "device_id", "ip", "app_version", "locale"]);
  const copy = (key: string, value: unknown) => (redactBody({ [key]: value }, p) as Record<string, unknown>)[key];
  for (const f of shown) {
    const max = f.maxLength ?? 5;
    const value = f.type === "ip" ? "203.0.113.7" : f.type === "semver" ? "1.2.3" : "a".repeat(max);
    if (f.treatment.name === "keep") {
      assert.equal(copy(f.path, value), value, `${f.path}: a string of ${value.length} characters is kept`);
      assert.equal(copy(f.path, 42), 42, `${f.path}: a number is kept`);
    } else if (f.treatment.name === "pseudonymize") {
      assert.equal(copy(f.path, value), `hmac:${p.pseudonymize(f.treatment.kind as PiiKind, value)}`, `${f.path}: shown as its pseudonym`);
    } else assert.fail(`${f.path}: quarantineFields gave a field that is ${f.treatment.name}d`);
    if (f.maxLength !== undefined) {
      const longer = "a".repeat(f.maxLength + 1);
      assert.equal(copy(f.path, longer), `[string: ${longer.length} chars]`, `${f.path}: longer than ${f.maxLength} characters is a marker`);
    }
  }
  // Every other top-level key (a field the contract generalises, one it does not name) is redacted.
  for (const key of ["create_date", "sent_at", "email", "masked_ip", "userId"]) assert.equal(copy(key, "x"), "[string: 1 chars]", key);
});

test("the column table names every field of a contract, and what happens to it", () => {
  const rows = (e: EventSpec) => columnsTable(e).split("\n").slice(2);
  for (const file of ["contracts/examples/purchase.yaml", "contracts/examples/page-view.yaml"]) {
    const loaded = loadContract(`${REPO_ROOT}${file}`);
    assert.ok(loaded.contract, loaded.errors.join("\n"));
    for (const e of loaded.contract.events) {
      // One row per field, in the contract's order, and one for the fields it does not name.
      assert.deepEqual(rows(e).map((r) => /^\| (?:`[^`]+`|—) \| `([^`]+)`/.exec(r)?.[1] ?? "other"), [...e.fields.map((f) => f.path), "other"], file);
    }
  }
  const pageView = loadContract(`${REPO_ROOT}contracts/examples/page-view.yaml`).contract!.events[0]!;
  assert.match(rows(pageView).find((r) => r.includes("`search_text`"))!, /^\| — \|.*\*\*dropped\*\*/);
  assert.match(rows(pageView).find((r) => r.includes("`ip_network`"))!, /\*\*generalised\*\*: its network \(\/24 for IPv4, \/48 for IPv6\)/);
  assert.match(rows(pageView).at(-1)!, /quarantined \(`unclassified_field`\)/);
});
