import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { readContract } from "../../src/contracts/read-contract.ts";
import { planContract } from "../../src/ingest/contract-plan.ts";
import { registrationMismatch, type Registration } from "../../src/db/registration-mismatch.ts";

/** purchase.yaml's table as run plans it: subject customer_id, masked_email (email, pseudonymize), card_last4_hash (card_last4, hash). */
const read = readContract(readFileSync(new URL("../../contracts/examples/purchase.yaml", import.meta.url), "utf8"));
assert.deepEqual(read.errors, []);
const table = planContract(read.contract!, "purchase.yaml").tables[0]!;

const migrated: Registration = {
  subjectColumn: "customer_id",
  pseudonyms: [
    { column: "masked_email", kind: "email", recoverable: true },
    { column: "card_last4_hash", kind: "card_last4", recoverable: false },
  ],
};

test("the plan names the subject field's column", () => {
  assert.equal(table.subjectColumn, "customer_id");
});

test("a registration as migrate --contract writes it fits, and so does one with columns the contract no longer writes", () => {
  assert.equal(registrationMismatch(table, migrated), undefined);
  assert.equal(registrationMismatch(table, { ...migrated, pseudonyms: [...migrated.pseudonyms, { column: "old_phone_hash", kind: "phone", recoverable: false }] }), undefined);
});

test("an unregistered table, another subject, a missing or differing pseudonym column, a pseudonym column now in clear: each differs", () => {
  assert.equal(registrationMismatch(table, undefined), "is not registered for the lifecycle commands");
  assert.equal(
    registrationMismatch(table, { ...migrated, subjectColumn: "user_id" }),
    "is registered with subject column user_id, the contract's subject writes customer_id",
  );
  assert.equal(
    registrationMismatch(table, { ...migrated, pseudonyms: [migrated.pseudonyms[1]!] }),
    "has column masked_email (field email) not registered as a pseudonym column of kind email (pseudonymize)",
  );
  assert.equal(
    registrationMismatch(table, { ...migrated, pseudonyms: [{ column: "masked_email", kind: "mail", recoverable: true }, migrated.pseudonyms[1]!] }),
    "has column masked_email registered as kind mail (pseudonymize), the contract makes it kind email (pseudonymize) (field email)",
  );
  assert.equal(
    registrationMismatch(table, { ...migrated, pseudonyms: [migrated.pseudonyms[0]!, { column: "card_last4_hash", kind: "card_last4", recoverable: true }] }),
    "has column card_last4_hash registered as kind card_last4 (pseudonymize), the contract makes it kind card_last4 (hash) (field card.last4)",
  );
  assert.equal(
    registrationMismatch(table, { ...migrated, pseudonyms: [...migrated.pseudonyms, { column: "card_brand", kind: "brand", recoverable: false }] }),
    "has column card_brand registered as a pseudonym column of kind brand, the contract writes it in clear (field card.brand)",
  );
});
