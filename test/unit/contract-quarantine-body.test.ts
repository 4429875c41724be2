import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import fc from "fast-check";
import { applyContract } from "../../src/contracts/apply-contract.ts";
import { contractKeys } from "../../src/contracts/compile-contract.ts";
import { readContract } from "../../src/contracts/read-contract.ts";
import { planContract, type ContractPlan } from "../../src/ingest/contract-plan.ts";
import { contractQuarantineCopy } from "../../src/ingest/contract-quarantine-body.ts";
import { MAX_REDACTED_CHARS } from "../../src/ingest/quarantine-body.ts";
import { TEST_KEY } from "./fixtures.ts";

/** A refused event's copy by its contract: only `keep` fields in clear, HMACs as the row would hold them, the rest redacted. */
const keys = contractKeys(TEST_KEY);

function plan(text: string): ContractPlan {
  const r = readContract(text);
  assert.deepEqual(r.errors, []);
  return planContract(r.contract!, "test.yaml");
}

const purchase = plan(readFileSync(new URL("../../contracts/examples/purchase.yaml", import.meta.url), "utf8"));

const SIGNUP = plan(`version: 1
events:
  signup:
    match: all
    table: signups
    subject: account.id
    unknown: quarantine
    fields:
      account.id: { type: integer, treatment: keep, column: account_id }
      account.email: { type: string, max_length: 64, treatment: pseudonymize, kind: email, column: masked_email }
      ip: { type: ip, max_length: 64, treatment: pseudonymize, kind: ip, column: masked_ip }
      phone: { type: string, max_length: 32, required: false, treatment: hash, kind: phone, column: phone_hash }
      note: { type: string, max_length: 200, required: false, treatment: drop }
      plan: { type: string, max_length: 8, treatment: keep, column: plan }
      seen_at: { type: timestamp, treatment: generalize, to: day, column: seen_day }
`);

const ORDER = { type: "purchase", order_id: "o-1", customer_id: "c-42", email: "jane@example.com", card: { last4: "4242", brand: "visa", cvc: "123" }, amount_cents: "1999", currency: "EUR", ordered_at: "2026-12-06T21:04:05Z" };

function copyOf(p: ContractPlan, body: unknown) {
  const c = contractQuarantineCopy(typeof body === "string" ? body : JSON.stringify(body), p, keys);
  return { copy: c.redactedBody === null ? null : (JSON.parse(c.redactedBody) as unknown), facts: c.facts };
}

test("kept fields in clear (of their declared type only), pseudonymised and hashed ones as the row's HMAC, everything else redacted", () => {
  const { copy, facts } = copyOf(purchase, ORDER);
  const email = keys.pseudonymize("email", "jane@example.com");
  const last4 = keys.pseudonymize("card_last4", "4242");
  assert.deepEqual(copy, {
    type: "purchase",
    order_id: "o-1",
    customer_id: "c-42",
    email: `hmac:${email}`,
    card: { last4: `hmac:${last4}`, brand: "visa", cvc: "[string: 3 chars]" },
    // A kept integer sent as a string is not of its type: not shown.
    amount_cents: "[string: 4 chars]",
    currency: "EUR",
    ordered_at: "2026-12-06T21:04:05Z",
  });
  assert.deepEqual(facts, { userId: "c-42", maskedIp: null, maskedDeviceId: null, pseudonyms: [`email:${email}`, `card_last4:${last4}`] });
  // The copy shows the pseudonym a stored row holds: the same as applyContract's for the same value.
  const row = applyContract(purchase.compiled, { body: JSON.stringify({ ...ORDER, amount_cents: 1999, card: { last4: "4242" } }), sentAt: new Date() }, keys);
  assert.ok(row.ok);
  assert.equal(row.row.masked_email, email);
  assert.equal(row.row.card_last4_hash, last4);
});

test("nested subject, ip canonicalised before its HMAC, dropped and generalised fields redacted, too long values not kept", () => {
  const { copy, facts } = copyOf(SIGNUP, {
    account: { id: 7, email: "a@b.c" },
    ip: " ::ffff:203.0.113.9 ",
    phone: "+33 6 12 34 56 78",
    note: "call me",
    plan: "enterprise-plus",
    seen_at: "2026-12-06T21:04:05Z",
    extra: { deep: [1, "x"] },
  });
  assert.deepEqual(copy, {
    account: { id: 7, email: `hmac:${keys.pseudonymize("email", "a@b.c")}` },
    ip: `hmac:${keys.pseudonymize("ip", "203.0.113.9")}`,
    phone: `hmac:${keys.pseudonymize("phone", "+33 6 12 34 56 78")}`,
    note: "[string: 7 chars]",
    plan: "[string: 15 chars]",
    seen_at: "[string: 20 chars]",
    extra: { deep: ["[number: 1 chars]", "[string: 1 chars]"] },
  });
  assert.equal(facts.userId, "7");
  assert.deepEqual(facts.pseudonyms, [
    `email:${keys.pseudonymize("email", "a@b.c")}`,
    `ip:${keys.pseudonymize("ip", "203.0.113.9")}`,
    `phone:${keys.pseudonymize("phone", "+33 6 12 34 56 78")}`,
  ]);
  // A branch that is not an object, and a subject that is not of its type: shown as any value, naming nobody.
  const odd = copyOf(SIGNUP, { account: "a@b.c", ip: 12 });
  assert.deepEqual(odd.copy, { account: "[string: 5 chars]", ip: "[number: 2 chars]" });
  assert.deepEqual(odd.facts, { userId: null, maskedIp: null, maskedDeviceId: null, pseudonyms: null });
});

test("a body no event type recognises keeps nothing in clear; a body that is not JSON has no copy", () => {
  assert.deepEqual(copyOf(purchase, { type: "refund", customer_id: "c-42", email: "jane@example.com" }), {
    copy: { type: "[string: 6 chars]", customer_id: "[string: 4 chars]", email: "[string: 16 chars]" },
    facts: { userId: null, maskedIp: null, maskedDeviceId: null, pseudonyms: null },
  });
  assert.deepEqual(copyOf(purchase, '{"type": "purchase", "email": "jane@'), { copy: null, facts: { userId: null, maskedIp: null, maskedDeviceId: null, pseudonyms: null } });
  assert.deepEqual(copyOf(purchase, '["jane@example.com"]').copy, ["[string: 16 chars]"]);
});

test("an SNS notification: its Message as the event's copy, its MessageId as the contract keeps it, the rest of the envelope redacted", () => {
  const { copy, facts } = copyOf(purchase, {
    Type: "Notification",
    MessageId: "2a1b6c1e",
    TopicArn: "arn:aws:sns:eu-west-1:123456789012:orders",
    Message: JSON.stringify({ ...ORDER, amount_cents: 1999 }),
  });
  const c = copy as Record<string, unknown>;
  assert.equal(c.Type, "[string: 12 chars]");
  assert.equal(c.MessageId, "2a1b6c1e");
  assert.equal(c.TopicArn, "[string: 41 chars]");
  assert.equal((c.Message as Record<string, unknown>).email, `hmac:${keys.pseudonymize("email", "jane@example.com")}`);
  assert.equal((c.Message as Record<string, unknown>).amount_cents, 1999);
  assert.equal(facts.userId, "c-42");
});

test("the copy is bounded whatever the body, and never holds a value the contract does not keep", () => {
  const wide = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`k${i}`, "x".repeat(100)]));
  let deep: unknown = "secret";
  for (let i = 0; i < 500; i++) deep = { card: deep };
  for (const body of [{ ...ORDER, ...wide }, { ...ORDER, card: deep }]) {
    const c = contractQuarantineCopy(JSON.stringify(body), purchase, keys);
    assert.ok(c.redactedBody!.length <= MAX_REDACTED_CHARS, `${c.redactedBody!.length}`);
    assert.ok(!c.redactedBody!.includes("secret") && !c.redactedBody!.includes("xxxx"));
  }
  fc.assert(
    fc.property(fc.jsonValue(), fc.stringMatching(/^[a-z]{12,20}$/), (extra, s) => {
      const secret = `Q${s}`;
      const c = contractQuarantineCopy(JSON.stringify({ ...ORDER, email: secret, extra, card: { last4: secret } }), purchase, keys);
      return c.redactedBody !== null && !c.redactedBody.includes(secret);
    }),
  );
});
