import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { applyContract } from "../../src/contracts/apply-contract.ts";
import { compileContract, contractKeys } from "../../src/contracts/compile-contract.ts";
import { readContract } from "../../src/contracts/read-contract.ts";
import { makeContractsWorkload, THREE_TYPES_CONTRACT } from "../../scripts/bench/contracts-workload.ts";
import { TEST_KEY } from "./fixtures.ts";

// The benchmark's second workload must be what it claims: every event it counts as valid is stored by the contract in
// the table it expects, and every malformed one is refused with the reason it expects. Checked here, through the
// contract's own compiled path, so that a drift between the generator and bench/contracts/three-types.yaml fails a
// test rather than a benchmark run's verification.
test("the contracts workload: valid events become rows of their tables, malformed ones are refused with the reason it expects", () => {
  const read = readContract(readFileSync(THREE_TYPES_CONTRACT, "utf8"));
  assert.deepEqual(read.errors, []);
  const contract = read.contract!;
  assert.deepEqual(contract.events.map((e) => e.name).sort(), ["page_view", "purchase", "signup"]);
  const personal = contract.events.flatMap((e) => e.fields).filter((f) => !f.path.startsWith("$") && ["pseudonymize", "hash", "generalize"].includes(f.treatment.name));
  assert.equal(personal.length, 8, "eight personal fields, as the contract's header says");

  const compiled = compileContract(contract);
  const keys = contractKeys(TEST_KEY);
  const w = makeContractsWorkload(5000, { seed: 7, malformedRate: 0.05 });
  assert.equal(w.bodies.length, 5000);
  const rows: Record<string, number> = {};
  const byReason: Record<string, number> = {};
  const kinds = new Set<string>();
  for (const body of w.bodies) {
    const a = applyContract(compiled, { body, sentAt: new Date("2026-12-07T04:00:00Z") }, keys);
    if (a.ok) {
      rows[a.table] = (rows[a.table] ?? 0) + 1;
      for (const v of a.vault) kinds.add(v.kind);
    } else {
      byReason[a.reason] = (byReason[a.reason] ?? 0) + 1;
    }
  }
  assert.deepEqual(rows, w.rows);
  assert.deepEqual(byReason, w.byReason);
  assert.equal(Object.values(byReason).reduce((x, y) => x + y, 0), w.malformed);
  assert.ok(w.malformed > 150 && w.malformed < 350, `about 5 % malformed (${w.malformed})`);
  // Recoverable kinds only: hashed ones (card_last4, session) never reach the vault.
  assert.deepEqual([...kinds].sort(), ["email", "ip", "phone"]);
  // Deterministic for a seed.
  assert.deepEqual(makeContractsWorkload(200, { seed: 7, malformedRate: 0.05 }).bodies, makeContractsWorkload(200, { seed: 7, malformedRate: 0.05 }).bodies);
});
