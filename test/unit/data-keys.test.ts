import assert from "node:assert/strict";
import { createSecretKey } from "node:crypto";
import { describe, test } from "node:test";
import fc from "fast-check";
import { IntegrityError, nonces, open, seal, quarantineBodyAad, vaultAad } from "../../src/keys/data-keys.ts";

const KEY = new Uint8Array(32).map((_, i) => 0x40 + i);
const OTHER = new Uint8Array(32).map((_, i) => 0x41 + i);
const utf8 = (s: string) => Buffer.from(s, "utf8");

describe("AES-256-GCM sealing of vault values", () => {
  test("round trip of any text, with a raw key or a KeyObject", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", maxLength: 300 }), (value) => {
        const aad = vaultAad("device_id", "ab".repeat(32));
        const sealed = seal(KEY, utf8(value), aad);
        assert.equal(open(KEY, sealed, aad).toString("utf8"), value);
        assert.equal(open(createSecretKey(KEY), seal(createSecretKey(KEY), utf8(value), aad), aad).toString("utf8"), value);
      }),
    );
  });

  test("the same value sealed twice gives different ciphertexts (random nonces)", () => {
    const aad = vaultAad("ip", "cd".repeat(32));
    const a = seal(KEY, utf8("10.0.0.1"), aad);
    const b = seal(KEY, utf8("10.0.0.1"), aad);
    assert.notDeepEqual(a.nonce, b.nonce);
    assert.notDeepEqual(a.ciphertext, b.ciphertext);
  });

  test("a batch's nonces are distinct and 12 bytes each", () => {
    const n = nonces(1000);
    assert.equal(n.length, 1000);
    assert.ok(n.every((x) => x.length === 12));
    assert.equal(new Set(n.map((x) => x.toString("hex"))).size, 1000);
  });

  const aad = vaultAad("device_id", "ef".repeat(32));
  const sealed = seal(KEY, utf8("593-47-5928"), aad);
  const flip = (b: Buffer, i: number) => {
    const c = Buffer.from(b);
    c[i] = c[i]! ^ 1;
    return c;
  };
  const failures: [string, () => Buffer][] = [
    ["a ciphertext byte altered", () => open(KEY, { nonce: sealed.nonce, ciphertext: flip(sealed.ciphertext, 0) }, aad)],
    ["the tag altered", () => open(KEY, { nonce: sealed.nonce, ciphertext: flip(sealed.ciphertext, sealed.ciphertext.length - 1) }, aad)],
    ["the nonce altered", () => open(KEY, { nonce: flip(sealed.nonce, 3), ciphertext: sealed.ciphertext }, aad)],
    ["the ciphertext truncated", () => open(KEY, { nonce: sealed.nonce, ciphertext: sealed.ciphertext.subarray(0, 10) }, aad)],
    ["a wrong key", () => open(OTHER, sealed, aad)],
    ["another pseudonym's binding", () => open(KEY, sealed, vaultAad("device_id", "ee".repeat(32)))],
    ["the other kind's binding", () => open(KEY, sealed, vaultAad("ip", "ef".repeat(32)))],
    ["a quarantined body's binding", () => open(KEY, sealed, quarantineBodyAad("m-1"))],
  ];
  for (const [name, attempt] of failures) {
    test(`fails loudly with ${name}`, () => {
      assert.throws(attempt, (err: unknown) => err instanceof IntegrityError && !String(err).includes("593-47-5928"));
    });
  }

  test("a quarantined body is bound to its message id", () => {
    const body = seal(KEY, utf8('{"ip":"10.1.2.3"}'), quarantineBodyAad("m-1"));
    assert.equal(open(KEY, body, quarantineBodyAad("m-1")).toString("utf8"), '{"ip":"10.1.2.3"}');
    assert.throws(() => open(KEY, body, quarantineBodyAad("m-2")), IntegrityError);
  });
});
