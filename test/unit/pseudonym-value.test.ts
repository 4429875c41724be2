import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { applyContract } from "../../src/contracts/apply-contract.ts";
import { compileContract, contractKeys } from "../../src/contracts/compile-contract.ts";
import { contractKinds, pseudonymInput } from "../../src/contracts/pseudonym-value.ts";
import { readContract } from "../../src/contracts/read-contract.ts";
import { TEST_KEY } from "./fixtures.ts";

/** One event type with a field of each type that can be pseudonymised, and kinds shared by fields of different types. */
const CONTRACT = readContract(`version: 1
events:
  signup:
    match: all
    table: signups
    subject: user_id
    unknown: quarantine
    fields:
      user_id: { type: string, max_length: 64, treatment: keep, column: user_id }
      email: { type: string, max_length: 320, treatment: pseudonymize, kind: email, column: masked_email }
      client_ip: { type: ip, max_length: 64, treatment: pseudonymize, kind: client_ip, column: masked_client_ip }
      seat: { type: integer, treatment: hash, kind: seat, column: seat_hash }
      account: { type: integer, required: false, treatment: pseudonymize, kind: account, column: masked_account }
      account_ref: { type: string, max_length: 20, required: false, treatment: pseudonymize, kind: account, column: masked_account_ref }
      peer: { type: ip, required: false, treatment: pseudonymize, kind: peer, column: masked_peer }
      peer_text: { type: string, max_length: 64, required: false, treatment: pseudonymize, kind: peer, column: masked_peer_text }
`);
assert.deepEqual(CONTRACT.errors, []);
const kinds = contractKinds(CONTRACT.contract!);
const compiled = compileContract(CONTRACT.contract!);
const keys = contractKeys(TEST_KEY);

function input(kind: string, raw: string): string {
  const r = pseudonymInput(kinds.get(kind)!, raw);
  assert.ok("value" in r, `refused: ${JSON.stringify(r)}`);
  return r.value;
}

function problem(kind: string, raw: string): string {
  const r = pseudonymInput(kinds.get(kind)!, raw);
  assert.ok("problem" in r, `accepted: ${JSON.stringify(r)}`);
  assert.ok(raw.trim() === "" || !r.problem.includes(raw.trim()), "the value is never echoed");
  return r.problem;
}

/** What ingestion stores in `column` for an event with these values. */
function stored(values: Record<string, unknown>, column: string): unknown {
  const a = applyContract(compiled, { body: JSON.stringify({ user_id: "u-1", email: "a@example.com", client_ip: "192.0.2.1", seat: 1, ...values }), sentAt: new Date() }, keys);
  assert.ok(a.ok, JSON.stringify(a));
  return a.row[column];
}

describe("pseudonymInput: the value as the contract's path pseudonymises it", () => {
  test("every kind a pseudonymize or hash field declares, with its treatment", () => {
    assert.deepEqual(
      [...kinds.values()].map((k) => [k.kind, k.treatment, k.fields.map((f) => f.type)]),
      [
        ["email", "pseudonymize", ["string"]],
        ["client_ip", "pseudonymize", ["ip"]],
        ["seat", "hash", ["integer"]],
        ["account", "pseudonymize", ["integer", "string"]],
        ["peer", "pseudonymize", ["ip", "string"]],
      ],
    );
  });

  test("table: each type canonicalised as ingestion does, and the stored pseudonym is the HMAC of that input", () => {
    const cases: [kind: string, raw: string, canonical: string, event: Record<string, unknown>, column: string][] = [
      ["email", "Ada@Example.com ", "Ada@Example.com ", { email: "Ada@Example.com " }, "masked_email"],
      ["client_ip", " 2001:DB8:0:0::1 ", "2001:db8::1", { client_ip: "2001:0db8::0001" }, "masked_client_ip"],
      // An IPv4-mapped address is its IPv4 address, as ingestion stores it.
      ["client_ip", "::ffff:192.0.2.1", "192.0.2.1", { client_ip: "::FFFF:192.0.2.1" }, "masked_client_ip"],
      ["client_ip", "203.0.113.7", "203.0.113.7", { client_ip: "203.0.113.7" }, "masked_client_ip"],
      ["seat", "1e3", "1000", { seat: 1000 }, "seat_hash"],
      ["seat", "-0", "0", { seat: 0 }, "seat_hash"],
      ["seat", " 42 ", "42", { seat: 42 }, "seat_hash"],
      // A string field and an integer field of one kind store "42" alike.
      ["account", "42", "42", { account: 42 }, "masked_account"],
      ["account", "42", "42", { account_ref: "42" }, "masked_account_ref"],
      // Only the string field can hold text: its value, as it is.
      ["account", "ACC-7", "ACC-7", { account_ref: "ACC-7" }, "masked_account_ref"],
      // An ip and a string field of one kind store a canonical address alike.
      ["peer", "2001:db8::2", "2001:db8::2", { peer: "2001:DB8::2" }, "masked_peer"],
      ["peer", "2001:db8::2", "2001:db8::2", { peer_text: "2001:db8::2" }, "masked_peer_text"],
    ];
    for (const [kind, raw, canonical, event, column] of cases) {
      assert.equal(input(kind, raw), canonical, `${kind} ${JSON.stringify(raw)}`);
      assert.equal(keys.pseudonymize(kind, canonical), stored(event, column), `${kind} ${JSON.stringify(raw)} → ${column}`);
    }
  });

  test("table: what no field of the kind could store is refused in words, never echoing the value", () => {
    assert.match(problem("client_ip", "203.0.113.999"), /^is not a valid IP address$/);
    assert.match(problem("seat", "1.5"), /^is not an integer/);
    assert.match(problem("seat", "9007199254740993"), /^is not an integer/);
    assert.match(problem("seat", '"42"'), /^is not an integer/);
    assert.match(problem("email", ""), /^is empty$/);
    assert.match(problem("email", "   "), /^is empty$/);
    assert.match(problem("email", `${"x".repeat(321)}`), /longer than the 320 characters/);
    assert.match(problem("email", "a\u0000b"), /NUL/);
    assert.match(problem("account", "x".repeat(30)), /^fits no field of kind account: it is not an integer.*; it is longer than the 20 characters/);
    // Stored two ways (the ip field canonicalises, the string field keeps it as sent): two pseudonyms, so none.
    assert.match(problem("peer", "2001:DB8::2"), /^is stored differently by the ip and string fields of kind peer \(2 pseudonyms\): write it as the field you search stores it/);
  });

  test("property: an address in any notation gives the stored pseudonym of an ip field", () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), fc.boolean(), (ip, upper) => {
        const written = upper ? ip.toUpperCase() : ip;
        assert.equal(keys.pseudonymize("client_ip", input("client_ip", written)), stored({ client_ip: ip }, "masked_client_ip"));
      }),
    );
  });

  test("property: any safe integer, written as JSON writes it, gives the stored hash", () => {
    fc.assert(
      fc.property(fc.maxSafeInteger(), (n) => {
        assert.equal(keys.pseudonymize("seat", input("seat", JSON.stringify(n))), stored({ seat: n }, "seat_hash"));
      }),
    );
  });
});
