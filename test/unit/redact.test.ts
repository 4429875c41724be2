import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { redactBody } from "../../src/mask/mask-event.ts";
import { createPseudonymizer } from "../../src/mask/pseudonymize.ts";
import { prepareOutcome, type IncomingMessage } from "../../src/runner/prepare.ts";
import { withoutOriginals, type Outcome } from "../../src/sink/write-batch.ts";
import { SAMPLE_BODY, sampleWith, TEST_KEY, VECTORS } from "./fixtures.ts";

const p = createPseudonymizer(TEST_KEY);
const ip = (value: string) => `hmac:${p.pseudonymize("ip", value)}`;
const deviceId = (value: string) => `hmac:${p.pseudonymize("device_id", value)}`;

function message(body: string): IncomingMessage {
  return { messageId: "m-1", body, sentAt: new Date("2026-03-01T12:00:00Z"), receivedAt: new Date("2026-03-01T12:00:01Z") };
}

type Quarantined = Extract<Outcome, { kind: "quarantine" }>;

function quarantined(body: string): Quarantined {
  const outcome = prepareOutcome(message(body), p);
  assert.equal(outcome.kind, "quarantine");
  return outcome;
}

/** Rejected bodies (no app_version), the raw values that must not survive, and the expected redacted copy. */
const cases: [name: string, body: unknown, raw: string[], redacted: unknown][] = [
  [
    "top-level ip and device_id",
    { user_id: "u1", ip: "199.172.111.135", device_id: "593-47-5928" },
    ["199.172.111.135", "593-47-5928"],
    { user_id: "u1", ip: `hmac:${VECTORS.sampleIp.hmac}`, device_id: `hmac:${VECTORS.sampleDeviceId.hmac}` },
  ],
  [
    "nested objects",
    { user_id: "u1", meta: { ip: "10.9.8.7", client: { device_id: "dev-abc-123" } } },
    ["10.9.8.7", "dev-abc-123"],
    { user_id: "u1", meta: { ip: ip("10.9.8.7"), client: { device_id: deviceId("dev-abc-123") } } },
  ],
  [
    "arrays",
    { sessions: [{ ip: "10.0.0.1" }, { device_id: "dev-one-1" }], ip: ["10.0.0.2", "10.0.0.3"], device_id: ["dev-two-2"] },
    ["10.0.0.1", "dev-one-1", "10.0.0.2", "10.0.0.3", "dev-two-2"],
    {
      sessions: [{ ip: ip("10.0.0.1") }, { device_id: deviceId("dev-one-1") }],
      ip: [ip("10.0.0.2"), ip("10.0.0.3")],
      device_id: [deviceId("dev-two-2")],
    },
  ],
  [
    "an object under ip",
    { ip: { v4: "10.4.4.4", note: "home-router" } },
    ["10.4.4.4", "home-router"],
    { ip: { v4: ip("10.4.4.4"), note: ip("home-router") } },
  ],
  [
    "an IP-looking string under an unrelated key",
    { foo: "10.1.2.3", bar: "2001:DB8::7", baz: "not an ip" },
    ["10.1.2.3", "2001:DB8::7"],
    { foo: ip("10.1.2.3"), bar: ip("2001:db8::7"), baz: "not an ip" },
  ],
  [
    "an ip that is not a valid address",
    { ip: "999.1.2.3.junk" },
    ["999.1.2.3.junk"],
    { ip: ip("999.1.2.3.junk") },
  ],
  [
    "a non-canonical ip, masked as the canonical one",
    { ip: " 2001:DB8:0::1 " },
    ["2001:DB8:0::1"],
    { ip: `hmac:${VECTORS.ipv6.hmac}` },
  ],
  [
    "numeric and boolean values under ip and device_id",
    { ip: 3350491015, device_id: 5934759281, other: 5934759281, flag: true },
    ["3350491015"],
    { ip: ip("3350491015"), device_id: deviceId("5934759281"), other: 5934759281, flag: true },
  ],
  [
    "null under ip",
    { ip: null, device_id: "dev-null-1" },
    ["dev-null-1"],
    { ip: null, device_id: deviceId("dev-null-1") },
  ],
  ["a top-level JSON array of addresses", ["10.1.1.1", "fe80::1", 3], ["10.1.1.1", "fe80::1"], [ip("10.1.1.1"), ip("fe80::1"), 3]],
  ["a top-level JSON string that is an address", "10.2.2.2", ["10.2.2.2"], ip("10.2.2.2")],
];

describe("prepareOutcome of a rejected body", () => {
  for (const [name, body, raw, redacted] of cases) {
    test(`redacts ${name}`, () => {
      const outcome = quarantined(JSON.stringify(body));
      assert.ok(outcome.redactedBody !== null);
      for (const value of raw) assert.ok(!outcome.redactedBody.includes(value), `${value} survived: ${outcome.redactedBody}`);
      assert.ok(!JSON.stringify(withoutOriginals(outcome)).includes(raw[0]!));
      // The original stays in memory for the vault, which stores it encrypted.
      assert.equal(outcome.originalBody, JSON.stringify(body));
      assert.deepEqual(JSON.parse(outcome.redactedBody), redacted);
    });
  }

  test("gives the ip the same pseudonym as a loaded row would get", () => {
    const row = prepareOutcome(message(sampleWith({ ip: "2001:db8::1" })), p);
    const rejected = quarantined(sampleWith({ ip: "2001:DB8:0::1", app_version: "not a version" }));
    assert.equal(row.kind, "row");
    assert.ok(rejected.redactedBody?.includes(`"hmac:${row.row.maskedIp}"`));
  });

  test("records reason, detail and metadata of the message", () => {
    const body = sampleWith({ app_version: 2.3 });
    const outcome = quarantined(body);
    assert.equal(outcome.reason, "wrong_type");
    assert.match(outcome.detail, /app_version/);
    assert.equal(outcome.messageId, "m-1");
    assert.equal(outcome.bodyLength, body.length);
    assert.deepEqual(outcome.sentAt, new Date("2026-03-01T12:00:00Z"));
    assert.deepEqual(outcome.receivedAt, new Date("2026-03-01T12:00:01Z"));
  });

  const notJson = ["ip=199.172.111.135 device_id=593-47-5928", "{\"ip\": \"199.172.111.135\",", "", "ïp: 199.172.111.135 😀"];
  for (const body of notJson) {
    test(`keeps no copy of the non-JSON body ${JSON.stringify(body)}, only its length`, () => {
      const outcome = quarantined(body);
      assert.equal(outcome.reason, "invalid_json");
      assert.equal(outcome.redactedBody, null);
      assert.equal(outcome.bodyLength, body.length);
      if (body !== "") assert.ok(!JSON.stringify(withoutOriginals(outcome)).includes("199.172.111.135"));
    });
  }
});

describe("prepareOutcome of a valid body", () => {
  test("is a row with pseudonyms and no raw ip or device_id", () => {
    const outcome = prepareOutcome(message(SAMPLE_BODY), p);
    assert.equal(outcome.kind, "row");
    assert.equal(outcome.row.maskedIp, VECTORS.sampleIp.hmac);
    assert.equal(outcome.row.maskedDeviceId, VECTORS.sampleDeviceId.hmac);
    const text = JSON.stringify(withoutOriginals(outcome));
    assert.ok(!text.includes("199.172.111.135") && !text.includes("593-47-5928"));
    assert.deepEqual(outcome.pii, { ip: "199.172.111.135", deviceId: "593-47-5928" });
  });
});

describe("redaction properties", () => {
  /**
   * A PII value: random text of at least 6 characters, or a real address. Pure lowercase hex is left out, as it could
   * occur inside a pseudonym by chance, which would not be a leak.
   */
  const pii = fc
    .oneof(fc.string({ minLength: 6 }), fc.string({ unit: "binary", minLength: 6 }), fc.ipV4(), fc.ipV6())
    .filter((s) => s.length >= 6 && !/^[0-9a-f:]+$/.test(s));

  /** Values that cannot contain a PII value: short numbers, booleans, null and fixed words. */
  const filler = fc.oneof(fc.integer({ min: 0, max: 99 }), fc.boolean(), fc.constant(null), fc.constantFrom("android", "RU", "2.3.0"));

  const body = fc.record({
    ip: pii,
    device_id: pii,
    user_id: filler,
    nested: fc.record({ ip: pii, extra: filler }),
    list: fc.array(fc.record({ device_id: pii, n: filler }), { maxLength: 3 }),
    ips: fc.record({ ip: fc.array(pii, { maxLength: 3 }) }),
  });

  function piiValues(b: { ip: string; device_id: string; nested: { ip: string }; list: { device_id: string }[]; ips: { ip: string[] } }) {
    return [b.ip, b.device_id, b.nested.ip, ...b.list.map((x) => x.device_id), ...b.ips.ip];
  }

  test("no raw ip or device_id survives in a redacted body", () => {
    fc.assert(
      fc.property(body, (b) => {
        const outcome = quarantined(JSON.stringify(b)); // no app_version: always rejected
        const out = outcome.redactedBody;
        assert.ok(out !== null);
        for (const value of piiValues(b)) {
          assert.ok(!out.includes(value), `raw ${JSON.stringify(value)} in ${out}`);
          assert.ok(!out.includes(JSON.stringify(value)), `escaped ${JSON.stringify(value)} in ${out}`);
        }
        assert.equal((out.match(/"hmac:[0-9a-f]{64}"/g) ?? []).length, piiValues(b).length);
      }),
    );
  });

  test("PII under other spellings of its key, and addresses inside free text or in keys, are redacted", () => {
    const body = { deviceId: "593-47-5928", "IP-Address": "199.172.111.135", note: "login from 10.1.2.3 via 2001:db8::1", "8.8.8.8": 1, __proto__x: 1 };
    const out = JSON.stringify(redactBody(body, p));
    for (const raw of ["593-47-5928", "199.172.111.135", "10.1.2.3", "2001:db8::1", "8.8.8.8"]) assert.ok(!out.includes(raw), `raw ${raw} in ${out}`);
    assert.ok(out.includes(`login from hmac:${p.pseudonymize("ip", "10.1.2.3")} via hmac:${p.pseudonymize("ip", "2001:db8::1")}`));
    assert.deepEqual(redactBody(JSON.parse('{"__proto__":"x","constructor":"y"}'), p), JSON.parse('{"__proto__":"x","constructor":"y"}'));
  });

  test("redactBody leaves values other than addresses, under other keys, unchanged", () => {
    // Keys that name PII in any spelling (IP, deviceId, ip-address…) and keys that hold an address are redacted by
    // design, so they are left out here; keys Object.prototype also has ("constructor", "__proto__") are kept in.
    const piiSpelling = /^(ip|ipaddress|ipaddr|clientip|remoteip|sourceip|deviceid)$/;
    const other = fc.dictionary(
      fc.oneof(fc.string(), fc.constantFrom("constructor", "toString", "__proto__", "hasOwnProperty")).filter(
        (k) => !piiSpelling.test(k.toLowerCase().replace(/[\s_-]/g, "")) && !/[.:]/.test(k),
      ),
      fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.string({ unit: "binary" }).filter((s) => !/[.:]/.test(s))),
      { noNullPrototype: true },
    );
    fc.assert(
      fc.property(other, (o) => {
        assert.deepEqual(redactBody(o, p), o);
      }),
    );
  });
});
