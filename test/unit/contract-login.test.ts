import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { applyContract, type Applied } from "../../src/contracts/apply-contract.ts";
import { compileContract, contractKeys } from "../../src/contracts/compile-contract.ts";
import { defaultContract } from "../../src/contracts/contract.ts";
import { generateEvents } from "../../src/ops/synthetic-events.ts";
import { maskEvent } from "../../src/ingest/prepare.ts";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { parseLoginEvent, REASON_CODES } from "../../src/ingest/login-event.ts";
import { RED_TEAM_BODIES, UNPARSEABLE_BY_JSONB } from "../helpers/red-team.ts";
import { uniqueEvents } from "../helpers/pipeline.ts";
import { SAMPLE_BODY, sampleWith, TEST_KEY, VECTORS } from "./fixtures.ts";

/**
 * The shipped login contract against today's path (parseLoginEvent, then maskEvent): the same rows, byte for byte,
 * the same pseudonyms and vault originals for the same key, and the same reason code for every refused body.
 */
const compiled = compileContract(defaultContract());
const OTHER_KEY = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
const SENT_AT = new Date("2026-12-06T23:59:59.999Z");

/** What today's path makes of a body, in applyContract's shape. */
function today(body: string, sentAt: Date, key: Uint8Array): { ok: true; row: Record<string, unknown>; vault: unknown[] } | { ok: false; reason: string; detail: string } {
  const parsed = parseLoginEvent(body);
  if (!parsed.ok) return { ok: false, reason: parsed.rejection.reason, detail: parsed.rejection.detail };
  const r = maskEvent(parsed.event, sentAt, createPseudonymizer(key));
  return {
    ok: true,
    row: { user_id: r.userId, device_type: r.deviceType, masked_device_id: r.maskedDeviceId, masked_ip: r.maskedIp, app_version: r.appVersion, locale: r.locale, create_date: r.createDate },
    // runner/prepare.ts vaults the canonical ip and the device id as received.
    vault: [
      { kind: "device_id", pseudonym: r.maskedDeviceId, original: parsed.event.deviceId },
      { kind: "ip", pseudonym: r.maskedIp, original: parsed.event.ip },
    ],
  };
}

/** Refusals whose first reported field is the same in both (today's order of those checks is the contract's). */
const SAME_FIELD_ORDER = new Set(["missing_field", "too_long", "invalid_ip", "invalid_app_version"]);

function assertSame(body: string, sentAt = SENT_AT, key = TEST_KEY): Applied {
  const expected = today(body, sentAt, key);
  const actual = applyContract(compiled, { body, sentAt }, contractKeys(key));
  const shown = JSON.stringify(body).slice(0, 200);
  if (expected.ok) {
    assert.ok(actual.ok, `${shown}: refused (${actual.ok ? "" : actual.reason}) but loaded today`);
    assert.equal(actual.table, "user_logins");
    // Byte-identical: the same keys in the same order with the same values, as JSON text.
    assert.equal(JSON.stringify(sortKeys(actual.row)), JSON.stringify(sortKeys(expected.row)), shown);
    assert.deepEqual(actual.vault, expected.vault, shown);
  } else {
    assert.ok(!actual.ok, `${shown}: loaded, but refused today (${expected.reason})`);
    assert.equal(actual.reason, expected.reason, shown);
    if (SAME_FIELD_ORDER.has(expected.reason)) assert.ok(expected.detail.includes(actual.path), `${shown}: path ${actual.path}, today: ${expected.detail}`);
  }
  return actual;
}

function sortKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
}

describe("the login contract does what masq does today", () => {
  test("the sample: the published HMAC vectors", () => {
    const a = assertSame(SAMPLE_BODY);
    assert.ok(a.ok);
    assert.equal(a.row.masked_ip, VECTORS.sampleIp.hmac);
    assert.equal(a.row.masked_device_id, VECTORS.sampleDeviceId.hmac);
    assert.equal(a.row.create_date, "2026-12-06");
  });

  test("every reason code the parser gives, on the fixtures", () => {
    const bodies = [
      "not json",
      "",
      "[]",
      "null",
      '"203.0.113.9"',
      '{"foo": "oops_wrong_msg_format", "bar": "123"}',
      sampleWith({ ip: null }),
      sampleWith({ locale: null }),
      sampleWith({ locale: "" }),
      sampleWith({ locale: "  " }),
      sampleWith({ locale: undefined }),
      sampleWith({ app_version: 2.3 }),
      sampleWith({ ip: 3350491015 }),
      sampleWith({ locale: { code: "RU" } }),
      sampleWith({ device_id: ["x"] }),
      sampleWith({ user_id: "" }),
      sampleWith({ device_id: "   " }),
      sampleWith({ ip: " " }),
      sampleWith({ device_id: "593-47\u0000-5928" }),
      sampleWith({ user_id: "\ud800" }),
      sampleWith({ user_id: "é".repeat(128) }),
      sampleWith({ user_id: "😀".repeat(129) }),
      sampleWith({ locale: "l".repeat(33) }),
      sampleWith({ ip: `${" ".repeat(50)}199.172.111.135` }),
      // Each length bound, exactly: the longest value accepted.
      sampleWith({ ip: `${" ".repeat(49)}199.172.111.135` }),
      sampleWith({ device_type: "d".repeat(32), locale: "l".repeat(32), device_id: "9".repeat(256) }),
      sampleWith({ ip: " 2001:DB8:0::1 " }),
      sampleWith({ ip: "::ffff:199.172.111.135" }),
      sampleWith({ ip: "199.172.111.035" }),
      sampleWith({ ip: "fe80::1%eth0" }),
      sampleWith({ app_version: " 2.3.0 " }),
      sampleWith({ app_version: "0.96" }),
      sampleWith({ app_version: "v2.3.0" }),
      sampleWith({ app_version: "1000" }),
      sampleWith({ extra: { nested: [1, 2] } }),
      ...RED_TEAM_BODIES.map((b) => b.body),
      ...UNPARSEABLE_BY_JSONB.map((b) => b.body),
    ];
    const seen = new Set<string>();
    for (const body of bodies) {
      const a = assertSame(body);
      seen.add(a.ok ? "loaded" : a.reason);
    }
    const parserCodes = REASON_CODES.filter((c) => c !== "db_rejected" && c !== "unprocessable");
    assert.deepEqual([...seen].filter((c) => c !== "loaded").sort(), [...parserCodes].sort());
  });

  test("the demo's synthetic events and the pipeline tests' events, with two keys", () => {
    for (const e of [...generateEvents(3000, { seed: 11, malformedRate: 0.2 }), ...uniqueEvents(1000, 3)]) {
      const a = assertSame(e.body);
      assert.equal(a.ok ? null : a.reason, e.expectedReason);
      assertSame(e.body, new Date(0), OTHER_KEY);
    }
  });

  test("generated events: any mix of valid, absent, mistyped, blank, long and odd values", () => {
    const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: "grapheme", maxLength: 140 }), fc.string({ unit: "binary", maxLength: 300 }));
    const value = (valid: fc.Arbitrary<string>) =>
      fc.oneof({ weight: 40, arbitrary: valid }, text, fc.constantFrom(undefined, null, "", "  ", "a\u0000b", "\udc00"), fc.integer(), fc.boolean(), fc.constant(["x"]), fc.constant({ k: 1 }));
    const ip = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4Extended(), fc.ipV4().map((a) => ` ::ffff:${a} `));
    const version = fc.tuple(fc.nat(1200), fc.nat(1200), fc.nat(1200)).map(([a, b, c]) => `${a}.${b}.${c}`);
    const event = fc.record(
      {
        user_id: value(fc.uuid()),
        app_version: value(fc.oneof(version, fc.constantFrom("2", "2.03", " 1.2.3 ", "1.2.3.4"))),
        device_type: value(fc.constantFrom("android", "ios", "d".repeat(32), "d".repeat(33))),
        ip: value(ip),
        device_id: value(fc.oneof(fc.string({ minLength: 1, maxLength: 20 }), fc.constant("9".repeat(257)))),
        locale: value(fc.constantFrom("RU", "en-GB", "l".repeat(33))),
        extra: fc.anything(),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(event, fc.date({ min: new Date(0), max: new Date("2100-01-01"), noInvalidDate: true }), (e, sentAt) => {
        assertSame(JSON.stringify(e), sentAt);
      }),
      { numRuns: 3000 },
    );
  });
});
