import assert from "node:assert/strict";
import { isIPv4, isIPv6 } from "node:net";
import { describe, test } from "node:test";
import fc from "fast-check";
import { MAX_APP_VERSION, canonicalizeIp, LIMITS, parseLoginEvent, type LoginEvent, type ReasonCode, REASON_CODES } from "../../src/ingest/login-event.ts";
import { SAMPLE, SAMPLE_BODY, sampleWith } from "./fixtures.ts";

const SAMPLE_EVENT: LoginEvent = {
  userId: "424cdd21-063a-43a7-b91b-7ca1a833afae",
  deviceType: "android",
  ip: "199.172.111.135",
  deviceId: "593-47-5928",
  locale: "RU",
  appVersion: 2_003_000,
};

function parsedEvent(body: string): LoginEvent {
  const result = parseLoginEvent(body);
  assert.ok(result.ok, `expected an event, got ${JSON.stringify(result.ok ? null : result.rejection)}`);
  return result.event;
}

describe("parseLoginEvent accepts", () => {
  test("the sample body", () => {
    const result = parseLoginEvent(SAMPLE_BODY);
    assert.ok(result.ok);
    assert.deepEqual(result.event, SAMPLE_EVENT);
    assert.deepEqual(result.json, SAMPLE);
  });

  const accepted: [name: string, body: string, expected: Partial<LoginEvent>][] = [
    ["locale null", sampleWith({ locale: null }), { locale: null }],
    ["locale missing", sampleWith({ locale: undefined }), { locale: null }],
    ["locale empty", sampleWith({ locale: "" }), { locale: null }],
    ["an IPv6 ip, canonicalised", sampleWith({ ip: "2001:DB8:0::1" }), { ip: "2001:db8::1" }],
    ["an IPv4-mapped ip, as IPv4", sampleWith({ ip: "::ffff:199.172.111.135" }), { ip: "199.172.111.135" }],
    ["an ip with surrounding spaces", sampleWith({ ip: " 199.172.111.135 " }), { ip: "199.172.111.135" }],
    ["app_version with surrounding spaces", sampleWith({ app_version: " 2.3.0 " }), { appVersion: 2_003_000 }],
    ["app_version of one part", sampleWith({ app_version: "2" }), { appVersion: 2_000_000 }],
    ["app_version of two parts", sampleWith({ app_version: "0.96" }), { appVersion: 96_000 }],
    ["extra keys", sampleWith({ extra: { nested: [1, 2] } }), SAMPLE_EVENT],
    // Limits count code points, as Postgres varchar does: "é" is one, "😀" is one (two UTF-16 units).
    ["user_id of exactly 128 'é'", sampleWith({ user_id: "é".repeat(128) }), { userId: "é".repeat(128) }],
    ["user_id of exactly 128 '😀'", sampleWith({ user_id: "😀".repeat(128) }), { userId: "😀".repeat(128) }],
    ["device_type of exactly 32", sampleWith({ device_type: "d".repeat(32) }), { deviceType: "d".repeat(32) }],
    ["locale of exactly 32", sampleWith({ locale: "l".repeat(32) }), { locale: "l".repeat(32) }],
    ["device_id of exactly 256", sampleWith({ device_id: "9".repeat(256) }), { deviceId: "9".repeat(256) }],
  ];
  for (const [name, body, expected] of accepted) {
    test(name, () => {
      assert.deepEqual(parsedEvent(body), { ...SAMPLE_EVENT, ...expected });
    });
  }
});

const RAW_IP = SAMPLE.ip;
const RAW_DEVICE_ID = SAMPLE.device_id;

const rejected: [name: string, body: string, reason: ReasonCode, mentions?: string][] = [
  ["not JSON", "not json at all", "invalid_json"],
  ["truncated JSON", SAMPLE_BODY.slice(0, -1), "invalid_json"],
  ["an empty body", "", "invalid_json"],
  ["a JSON array", "[]", "not_an_object", "array"],
  ["a JSON string", '"str"', "not_an_object", "string"],
  ["JSON null", "null", "not_an_object", "null"],
  ["a JSON number", "42", "not_an_object", "number"],
  ["a JSON string holding an ip", JSON.stringify(RAW_IP), "not_an_object", "string"],
  ...(["user_id", "app_version", "device_type", "ip", "device_id"] as const).map(
    (field): [string, string, ReasonCode, string] => [`no ${field}`, sampleWith({ [field]: undefined }), "missing_field", field],
  ),
  ["ip null", sampleWith({ ip: null }), "missing_field", "ip"],
  ["a message of another shape", '{"foo": "oops_wrong_msg_format", "bar": "123"}', "missing_field", "user_id"],
  ["numeric app_version", sampleWith({ app_version: 2.3 }), "wrong_type", "app_version"],
  ["numeric ip", sampleWith({ ip: 3350491015 }), "wrong_type", "ip"],
  ["numeric user_id", sampleWith({ user_id: 424 }), "wrong_type", "user_id"],
  ["boolean device_type", sampleWith({ device_type: true }), "wrong_type", "device_type"],
  ["array device_id", sampleWith({ device_id: [RAW_DEVICE_ID] }), "wrong_type", "device_id"],
  ["object locale", sampleWith({ locale: { code: "RU" } }), "wrong_type", "locale"],
  ["empty user_id", sampleWith({ user_id: "" }), "empty_field", "user_id"],
  ["blank device_id", sampleWith({ device_id: "   " }), "empty_field", "device_id"],
  ["blank ip", sampleWith({ ip: " " }), "empty_field", "ip"],
  ["NUL inside device_id", sampleWith({ device_id: "593-47\u0000-5928" }), "invalid_text", "device_id"],
  ["NUL inside locale", sampleWith({ locale: "R\u0000U" }), "invalid_text", "locale"],
  ["lone surrogate in device_id", sampleWith({ device_id: "593-47-\udc00" }), "invalid_text", "device_id"],
  ["lone surrogate in user_id", sampleWith({ user_id: "\ud800" }), "invalid_text", "user_id"],
  ["user_id of 129 characters", sampleWith({ user_id: "u".repeat(129) }), "too_long", "user_id"],
  ["user_id of 129 'é'", sampleWith({ user_id: "é".repeat(129) }), "too_long", "user_id"],
  ["device_type of 33 characters", sampleWith({ device_type: "d".repeat(33) }), "too_long", "device_type"],
  ["locale of 33 characters", sampleWith({ locale: "l".repeat(33) }), "too_long", "locale"],
  ["device_id of 257 characters", sampleWith({ device_id: "9".repeat(257) }), "too_long", "device_id"],
  ["ip of 65 characters", sampleWith({ ip: `${" ".repeat(50)}${RAW_IP}` }), "too_long", "ip"],
  ["ip out of range", sampleWith({ ip: "199.172.111.256" }), "invalid_ip", "ip"],
  ["ip with a leading zero", sampleWith({ ip: "199.172.111.035" }), "invalid_ip", "ip"],
  ["ip with a zone id", sampleWith({ ip: "fe80::1%eth0" }), "invalid_ip", "ip"],
  ["ip that is a host name", sampleWith({ ip: "login.example.com" }), "invalid_ip", "ip"],
  ["app_version with a v", sampleWith({ app_version: "v2.3.0" }), "invalid_app_version", "app_version"],
  ["app_version of four parts", sampleWith({ app_version: "2.3.0.1" }), "invalid_app_version", "app_version"],
  ["app_version part above 999", sampleWith({ app_version: "1000" }), "invalid_app_version", "app_version"],
];

describe("parseLoginEvent rejects", () => {
  for (const [name, body, reason, mentions] of rejected) {
    test(`${name}: ${reason}`, () => {
      const result = parseLoginEvent(body);
      assert.equal(result.ok, false);
      assert.equal(result.rejection.reason, reason);
      if (mentions !== undefined) assert.match(result.rejection.detail, new RegExp(`\\b${mentions}\\b`));
    });
  }

  test("with a detail that never holds the raw ip or device_id", () => {
    for (const [name, body] of rejected) {
      const result = parseLoginEvent(body);
      assert.ok(!result.ok);
      assert.ok(!result.rejection.detail.includes(RAW_IP), `${name}: ${result.rejection.detail}`);
      assert.ok(!result.rejection.detail.includes(RAW_DEVICE_ID), `${name}: ${result.rejection.detail}`);
    }
  });

  test("keeps the parsed JSON of a body that parsed, and none of one that did not", () => {
    const wrongShape = parseLoginEvent('{"foo": "oops_wrong_msg_format", "bar": "123"}');
    assert.deepEqual(wrongShape.json, { foo: "oops_wrong_msg_format", bar: "123" });
    assert.deepEqual(parseLoginEvent("[]").json, []);
    assert.equal(parseLoginEvent("not json at all").json, undefined);
  });
});

// What the parser itself can say: every reason code but those the sink and the replay add.
const KNOWN_REASONS: ReadonlySet<string> = new Set<string>(REASON_CODES.filter((c) => c !== "db_rejected" && c !== "unprocessable"));

function codePoints(s: string): number {
  return [...s].length;
}

function assertUsableText(value: string, max: number, what: string): void {
  assert.ok(value.trim() !== "", `${what} is not blank`);
  assert.ok(!value.includes("\u0000"), `${what} has no NUL`);
  assert.ok(codePoints(value) <= max, `${what} has at most ${max} characters`);
}

/** What every accepted event guarantees to the sink, checked against the body it came from. */
function assertValidEvent(event: LoginEvent, json: Record<string, unknown>): void {
  assertUsableText(event.userId, LIMITS.userId, "userId");
  assertUsableText(event.deviceType, LIMITS.deviceType, "deviceType");
  assertUsableText(event.deviceId, LIMITS.deviceId, "deviceId");
  if (event.locale !== null) assertUsableText(event.locale, LIMITS.locale, "locale");
  assert.ok(isIPv4(event.ip) || isIPv6(event.ip), "ip is an address");
  assert.equal(canonicalizeIp(event.ip), event.ip, "ip is canonical");
  assert.ok(Number.isInteger(event.appVersion) && event.appVersion >= 0 && event.appVersion <= MAX_APP_VERSION);
  assert.equal(event.userId, json.user_id);
  assert.equal(event.deviceType, json.device_type);
  assert.equal(event.deviceId, json.device_id);
  assert.equal(event.ip, canonicalizeIp((json.ip as string).trim()));
}

function assertTotal(body: string): void {
  const result = parseLoginEvent(body);
  if (result.ok) assertValidEvent(result.event, result.json);
  else assert.ok(KNOWN_REASONS.has(result.rejection.reason), `unknown reason ${result.rejection.reason}`);
}

const FIELDS = ["user_id", "app_version", "device_type", "ip", "device_id", "locale"] as const;

/** Values a producer might put under a field: sensible strings, near misses and wrong types. */
const fieldValue = fc.oneof(
  fc.string(),
  fc.string({ unit: "binary", maxLength: 300 }),
  fc.constantFrom("", " ", "\u0000", "2.3.0", "999.999.999", "1000", "199.172.111.135", "::1", "fe80::1%eth0", "android", "RU"),
  fc.ipV4(),
  fc.ipV6(),
  fc.jsonValue(),
);

/** Objects whose keys are drawn from the expected ones, with random values. */
const fieldObject = fc.dictionary(fc.constantFrom(...FIELDS), fieldValue).map((o) => JSON.stringify(o));

describe("parseLoginEvent properties", () => {
  test("any body yields a valid event or a rejection with a known reason, and never throws", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.string({ unit: "binary" }),
          fc.json(),
          fc.jsonValue().map((v) => JSON.stringify(v)),
          fieldObject,
        ),
        assertTotal,
      ),
      { numRuns: 2000 },
    );
  });

  /** A valid event, as a body, with the event it must parse to. */
  const validEvent = fc
    .record({
      user_id: fc.oneof(fc.uuid(), fc.string({ unit: "binary", minLength: 1, maxLength: LIMITS.userId })),
      major: fc.integer({ min: 0, max: 999 }),
      minor: fc.integer({ min: 0, max: 999 }),
      patch: fc.integer({ min: 0, max: 999 }),
      device_type: fc.oneof(fc.constantFrom("android", "ios", "web"), fc.string({ unit: "binary", minLength: 1, maxLength: LIMITS.deviceType })),
      ip: fc.oneof(fc.ipV4(), fc.ipV6()),
      locale: fc.option(fc.string({ unit: "binary", minLength: 1, maxLength: LIMITS.locale }), { nil: null }),
      device_id: fc.string({ unit: "binary", minLength: 1, maxLength: LIMITS.deviceId }),
    })
    .filter(
      (e) =>
        [e.user_id, e.device_type, e.device_id, e.locale ?? "x"].every((s) => s.trim() !== "" && !s.includes("\u0000")),
    );

  test("every valid event is accepted as sent", () => {
    fc.assert(
      fc.property(validEvent, (e) => {
        const body = JSON.stringify({
          user_id: e.user_id,
          app_version: `${e.major}.${e.minor}.${e.patch}`,
          device_type: e.device_type,
          ip: e.ip,
          locale: e.locale,
          device_id: e.device_id,
        });
        assert.deepEqual(parsedEvent(body), {
          userId: e.user_id,
          deviceType: e.device_type,
          ip: canonicalizeIp(e.ip),
          deviceId: e.device_id,
          locale: e.locale,
          appVersion: e.major * 1_000_000 + e.minor * 1_000 + e.patch,
        });
      }),
    );
  });
});
