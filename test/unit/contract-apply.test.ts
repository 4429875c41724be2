import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import fc from "fast-check";
import { applyContract, type Applied } from "../../src/contracts/apply-contract.ts";
import { compileContract, contractKeys, ipNetwork, numberBucket, parseTimestamp, timeBucket } from "../../src/contracts/compile-contract.ts";
import { readContract } from "../../src/contracts/read-contract.ts";
import { canonicalizeIp } from "../../src/ingest/login-event.ts";
import { TEST_KEY } from "./fixtures.ts";

const keys = contractKeys(TEST_KEY);
const SENT_AT = new Date("2026-12-06T21:05:00Z");

function compiledFile(name: string) {
  const r = readContract(readFileSync(new URL(`../../contracts/${name}`, import.meta.url), "utf8"));
  assert.deepEqual(r.errors, []);
  return compileContract(r.contract!);
}

const purchase = compiledFile("examples/purchase.yaml");
const pageView = compiledFile("examples/page-view.yaml");

const ORDER = { type: "purchase", order_id: "o-1", customer_id: "c-42", email: "jane@example.com", card: { last4: "4242", brand: "visa" }, amount_cents: 1999, currency: "EUR", ordered_at: "2026-12-06T21:04:05Z" };
const VIEW = { user_id: "u-1", page: "/", ip: "203.0.113.77", viewed_at: "2026-12-06T21:04:05Z", duration_ms: 1234, search_text: "Jane Doe's flights" };

function apply(c: ReturnType<typeof compileContract>, event: unknown): Applied {
  return applyContract(c, { body: typeof event === "string" ? event : JSON.stringify(event), sentAt: SENT_AT }, keys);
}

function refused(a: Applied): { reason: string; path: string } {
  assert.ok(!a.ok, `loaded: ${JSON.stringify(a)}`);
  return { reason: a.reason, path: a.path };
}

describe("applyContract: fail-closed", () => {
  test("a purchase: the email pseudonymised and vaulted, the last four digits hashed and not vaulted", () => {
    const a = apply(purchase, ORDER);
    assert.ok(a.ok);
    assert.equal(a.row.masked_email, keys.pseudonymize("email", "jane@example.com"));
    assert.equal(a.row.card_last4_hash, keys.pseudonymize("card_last4", "4242"));
    assert.deepEqual(a.vault, [{ kind: "email", pseudonym: a.row.masked_email, original: "jane@example.com" }]);
    assert.equal(a.row.sns_message_id, null);
    assert.equal(a.row.create_date, "2026-12-06");
    assert.ok(!JSON.stringify(a.row).includes("jane") && !JSON.stringify(a.row).includes("4242"));
  });

  test("an unclassified field, at the top or nested, is refused by its path and never its value", () => {
    assert.deepEqual(refused(apply(purchase, { ...ORDER, note: "call Jane on 555-0100" })), { reason: "unclassified_field", path: "note" });
    assert.deepEqual(refused(apply(purchase, { ...ORDER, card: { ...ORDER.card, cvc: "123" } })), { reason: "unclassified_field", path: "card.cvc" });
    // A key that does not look like a field name may itself be personal: it is shown by its length.
    assert.deepEqual(refused(apply(purchase, { ...ORDER, card: { ...ORDER.card, "jane@example.com": true } })), { reason: "unclassified_field", path: "card.[key 3: 16 chars]" });
    assert.deepEqual(refused(apply(purchase, { ...ORDER, card: "4242" })), { reason: "wrong_type", path: "card" });
  });

  test("a refusal's path never holds a value of the event, whatever its keys and values", () => {
    const values = fc.oneof(fc.string({ minLength: 3 }), fc.dictionary(fc.string(), fc.string({ minLength: 3 }), { maxKeys: 3 }));
    fc.assert(
      fc.property(fc.dictionary(fc.string(), values, { minKeys: 1, maxKeys: 4 }), fc.boolean(), (extra, nested) => {
        const event = nested ? { ...ORDER, card: { ...ORDER.card, ...extra } } : { ...ORDER, ...extra };
        const a = apply(purchase, event);
        if (a.ok) return;
        const texts = Object.values(extra).flatMap((v) => (typeof v === "string" ? [v] : Object.values(v)));
        const keys: Set<string> = new Set(Object.keys(extra).concat(...Object.values(extra).map((v) => (typeof v === "string" ? [] : Object.keys(v)))));
        // What a path may hold: declared names, keys that look like names, and markers of the others' lengths.
        const named = (t: string) => [...keys].some((k) => k.includes(t)) || JSON.stringify(ORDER).includes(t);
        const path = a.path.replace(/\[key \d+: \d+ chars\]/g, "");
        for (const t of texts) if (!named(t)) assert.ok(!path.includes(t), `path ${a.path} holds the value ${t}`);
      }),
      { numRuns: 2000 },
    );
  });

  test("an event no type recognises is refused as unknown_event", () => {
    assert.deepEqual(refused(apply(purchase, { ...ORDER, type: "refund" })), { reason: "unknown_event", path: "type" });
    assert.deepEqual(refused(apply(purchase, { order_id: "o-1" })), { reason: "unknown_event", path: "type" });
  });

  test("unknown: drop ignores fields the contract does not name", () => {
    const login = compiledFile("login.yaml");
    const a = apply(login, { user_id: "u", app_version: "1", device_type: "ios", ip: "203.0.113.1", device_id: "d", secret: "x" });
    assert.ok(a.ok);
    assert.ok(!JSON.stringify(a).includes('"x"'));
  });

  test("an SNS notification is unwrapped; MessageId becomes a field; a bad inner message is refused", () => {
    const sns = { Type: "Notification", MessageId: "m-1", Message: JSON.stringify(ORDER), Timestamp: "2026-12-06T21:04:06.000Z" };
    const a = apply(purchase, sns);
    assert.ok(a.ok);
    assert.equal(a.row.sns_message_id, "m-1");
    assert.deepEqual(refused(apply(purchase, { ...sns, Message: "{not json" })), { reason: "invalid_json", path: "$sns.Message" });
    assert.deepEqual(refused(apply(purchase, { ...sns, Message: JSON.stringify({ ...ORDER, extra: 1 }) })), { reason: "unclassified_field", path: "extra" });
    // Without envelope: sns, a notification is an event like any other: its keys are unclassified.
    assert.deepEqual(refused(apply(pageView, sns)), { reason: "unclassified_field", path: "Type" });
  });

  test("a page view: the ip cut to its network, the time to its hour, the duration to its bucket, free text dropped", () => {
    const a = apply(pageView, VIEW);
    assert.ok(a.ok);
    assert.deepEqual(a.row, { user_id: "u-1", page: "/", ip_network: "203.0.113.0/24", viewed_hour: "2026-12-06T21:00:00Z", duration_bucket_ms: 1000, create_date: "2026-12-06" });
    assert.deepEqual(a.vault, []);
    const b = apply(pageView, { ...VIEW, duration_ms: undefined, search_text: null });
    assert.ok(b.ok);
    assert.equal(b.row.duration_bucket_ms, null);
  });

  const refusals: [name: string, change: Record<string, unknown>, reason: string, path: string][] = [
    ["a missing ip", { ip: undefined }, "missing_field", "ip"],
    ["a numeric page", { page: 7 }, "wrong_type", "page"],
    ["a fractional duration", { duration_ms: 1.5 }, "wrong_type", "duration_ms"],
    ["a blank user_id", { user_id: " " }, "empty_field", "user_id"],
    ["NUL in the free text (dropped, but still refused: it is not text)", { search_text: "a\u0000b" }, "invalid_text", "search_text"],
    ["a page too long", { page: "/".repeat(513) }, "too_long", "page"],
    ["not an address", { ip: "example.com" }, "invalid_ip", "ip"],
    ["a time without a zone", { viewed_at: "2026-12-06T21:04:05" }, "invalid_timestamp", "viewed_at"],
    ["not a date", { viewed_at: "2026-13-45T00:00:00Z" }, "invalid_timestamp", "viewed_at"],
  ];
  for (const [name, change, reason, path] of refusals) {
    test(`refused: ${name}`, () => {
      const body = JSON.stringify({ ...VIEW, ...change });
      assert.deepEqual(refused(apply(pageView, body)), { reason, path });
      assert.ok(!JSON.stringify(refused(apply(pageView, body))).includes("Jane"));
    });
  }
});

describe("generalisations", () => {
  test("ip networks", () => {
    assert.equal(ipNetwork("203.0.113.77", 24, 48), "203.0.113.0/24");
    assert.equal(ipNetwork("203.0.113.77", 16, 48), "203.0.0.0/16");
    assert.equal(ipNetwork("255.255.255.255", 1, 48), "128.0.0.0/1");
    assert.equal(ipNetwork("2001:db8:85a3:8d3:1319:8a2e:370:7348", 24, 48), "2001:db8:85a3::/48");
    assert.equal(ipNetwork("2001:db8:85a3:8d3::1", 24, 52), "2001:db8:85a3::/52");
    assert.equal(ipNetwork("2001:db8:85a3:8d3::1", 24, 56), "2001:db8:85a3:800::/56");
    assert.equal(ipNetwork("::1", 24, 128), "::1/128");
  });

  test("every address is inside its network, and addresses of one network share it", () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), fc.integer({ min: 1, max: 32 }), fc.integer({ min: 1, max: 128 }), (text, v4, v6) => {
        const ip = canonicalizeIp(text);
        if (ip === null) return;
        const net = ipNetwork(ip, v4, v6);
        const [base, bits] = net.split("/") as [string, string];
        assert.equal(canonicalizeIp(base), base);
        assert.equal(ipNetwork(base, Number(bits), Number(bits)), net);
      }),
    );
  });

  test("timestamps and numbers", () => {
    assert.equal(timeBucket(new Date("2026-12-06T21:59:59.999Z"), "hour"), "2026-12-06T21:00:00Z");
    assert.equal(timeBucket(new Date("2026-12-06T23:59:59.999Z"), "day"), "2026-12-06");
    assert.equal(parseTimestamp("2026-12-06T22:59:59.123456+01:00")?.toISOString(), "2026-12-06T21:59:59.123Z");
    assert.equal(parseTimestamp("2026-12-06"), null);
    assert.equal(numberBucket(37, 10), 30);
    assert.equal(numberBucket(-3, 10), -10);
  });
});
