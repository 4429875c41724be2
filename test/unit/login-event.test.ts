import assert from "node:assert/strict";
import { isIPv4, isIPv6 } from "node:net";
import { describe, test } from "node:test";
import fc from "fast-check";
import { canonicalizeIp, decodeAppVersion, encodeAppVersion, LIMITS, MAX_APP_VERSION, parseLoginEvent, REASON_CODES, type LoginEvent, type ReasonCode } from "../../src/ingest/login-event.ts";
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
    ["locale blank (a property run found it kept as spaces)", sampleWith({ locale: " \t " }), { locale: null }],
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

// The ip's canonical text (canonicalizeIp).

const IP_CASES: [input: string, expected: string | null, why: string][] = [
  ["199.172.111.135", "199.172.111.135", "IPv4 is kept as is"],
  ["0.0.0.0", "0.0.0.0", "IPv4 lower bound"],
  ["255.255.255.255", "255.255.255.255", "IPv4 upper bound"],
  ["010.0.0.1", null, "IPv4 with a leading zero is ambiguous (octal?)"],
  ["1.2.3.04", null, "IPv4 with a leading zero in the last octet"],
  ["256.1.1.1", null, "IPv4 octet above 255"],
  ["1.2.3", null, "three octets"],
  ["1.2.3.4.5", null, "five octets"],

  ["2001:DB8::1", "2001:db8::1", "uppercase becomes lowercase"],
  ["ABCD:EF01:2345:6789:ABCD:EF01:2345:6789", "abcd:ef01:2345:6789:abcd:ef01:2345:6789", "uppercase, no zeros"],
  ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1", "leading zeros removed, zero run compressed"],
  ["2001:db8::0:1", "2001:db8::1", "a written zero group joins the run"],
  ["2001:db8:0:0:1:0:0:0", "2001:db8:0:0:1::", "the longest zero run is compressed"],
  ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1", "the first run wins a tie"],
  ["1:0:0:2:0:0:3:4", "1::2:0:0:3:4", "the first run wins a tie, in the middle"],
  ["1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7", "a single zero group is not compressed"],
  ["1::2:3:4:5:6:7", "1:0:2:3:4:5:6:7", "'::' standing for one group is expanded"],
  ["::", "::", "the unspecified address"],
  ["0:0:0:0:0:0:0:0", "::", "the unspecified address, written out"],
  ["::1", "::1", "loopback"],
  ["0:0:0:0:0:0:0:1", "::1", "loopback, written out"],
  ["1::", "1::", "trailing run"],
  ["1:0:0:0:0:0:0:0", "1::", "trailing run, written out"],
  ["1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304", "an embedded IPv4 tail that is not IPv4-mapped becomes hex"],

  ["::ffff:1.2.3.4", "1.2.3.4", "IPv4-mapped, dotted"],
  ["::ffff:0102:0304", "1.2.3.4", "IPv4-mapped, hex"],
  ["::FFFF:C0A8:0101", "192.168.1.1", "IPv4-mapped, uppercase hex"],
  ["0:0:0:0:0:ffff:1.2.3.4", "1.2.3.4", "IPv4-mapped, written out"],
  ["::ffff:0:0", "0.0.0.0", "IPv4-mapped zero address"],

  ["::203.0.113.29", "203.0.113.29", "IPv4-compatible (deprecated), dotted: the same host as the IPv4 address"],
  ["::cb00:711d", "203.0.113.29", "IPv4-compatible, hex"],
  ["0:0:0:0:0:0:203.0.113.29", "203.0.113.29", "IPv4-compatible, written out"],
  ["::1.0.0.0", "1.0.0.0", "IPv4-compatible, lowest folded address"],
  ["::0.255.255.255", "::ff:ffff", "::/104 is not IPv4-compatible: no IPv4 host has first octet 0"],
  ["::2", "::2", "a low ::/96 address stays IPv6"],

  ["fe80::1%eth0", null, "a zone id names an interface, not a host"],
  ["fe80::1%1", null, "numeric zone id"],
  ["", null, "empty"],
  ["garbage", null, "garbage"],
  ["localhost", null, "a host name"],
  [" 1.2.3.4", null, "leading space"],
  ["1.2.3.4 ", null, "trailing space"],
  ["[::1]", null, "bracketed"],
  ["::g", null, "non-hex group"],
  ["12345::1", null, "group of five digits"],
  ["1:2:3:4:5:6:7:8:9", null, "nine groups"],
  ["1:2:3:4:5:6:7", null, "seven groups without '::'"],
  ["2001:db8::1::2", null, "two '::'"],
  ["::ffff:01.02.03.04", null, "IPv4-mapped with leading zeros in the octets"],
];

describe("canonicalizeIp", () => {
  for (const [input, expected, why] of IP_CASES) {
    test(`${JSON.stringify(input)} → ${JSON.stringify(expected)} (${why})`, () => {
      assert.equal(canonicalizeIp(input), expected);
    });
  }
});

/**
 * An independent RFC 5952 formatter: the WHATWG URL serializer writes IPv6 hosts in lowercase, without leading
 * zeros, with the first longest run of two or more zero groups as "::". It keeps IPv4-mapped addresses as IPv6
 * ("::ffff:102:304") and IPv4-compatible ones ("::102:304"), which masq maps to the IPv4 address.
 */
function expectedCanonical(ipv6: string): string {
  const host = new URL(`http://[${ipv6}]/`).hostname.slice(1, -1);
  const mapped = /^::(?:ffff:)?([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (mapped === null || (!host.startsWith("::ffff:") && parseInt(mapped[1]!, 16) < 0x100)) return host;
  const [hi, lo] = [parseInt(mapped[1]!, 16), parseInt(mapped[2]!, 16)];
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}

/** Eight 16-bit groups, often zero so that zero runs of every length and position occur. */
const groups = fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 });

/** The same address written out in full, each group padded to four digits, in random case. */
const fullForm = fc.tuple(groups, fc.boolean()).map(([gs, upper]) => {
  const text = gs.map((g) => g.toString(16).padStart(4, "0")).join(":");
  return upper ? text.toUpperCase() : text;
});

describe("canonicalizeIp properties", () => {
  test("the full form and the canonical form of any IPv6 address canonicalise alike, to a valid address", () => {
    fc.assert(
      fc.property(fullForm, (full) => {
        const canonical = canonicalizeIp(full);
        assert.ok(canonical !== null, `${full} is accepted`);
        assert.equal(canonicalizeIp(canonical), canonical);
        const mappedToIPv4 = /^0{4}:0{4}:0{4}:0{4}:0{4}:(ffff:|0{4}:(?!00)[0-9a-f]{4}:)/i.test(full);
        assert.ok(mappedToIPv4 ? isIPv4(canonical) : isIPv6(canonical), `${canonical} is a valid address`);
      }),
    );
  });

  test("the canonical form of any IPv6 address is its RFC 5952 text", () => {
    fc.assert(
      fc.property(fullForm, (full) => {
        assert.equal(canonicalizeIp(full), expectedCanonical(full));
      }),
    );
  });

  test("any IPv6 text, compressed or with an IPv4 tail, canonicalises to its RFC 5952 text", () => {
    fc.assert(
      fc.property(fc.ipV6(), (text) => {
        assert.equal(canonicalizeIp(text), expectedCanonical(text));
      }),
    );
  });

  test("every IPv4 address maps to itself, directly, as an IPv4-mapped and as an IPv4-compatible IPv6 address", () => {
    fc.assert(
      fc.property(fc.ipV4(), (ip) => {
        const [a, b, c, d] = ip.split(".").map(Number) as [number, number, number, number];
        const hex = `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
        assert.equal(canonicalizeIp(ip), ip);
        assert.equal(canonicalizeIp(`::ffff:${ip}`), ip);
        assert.equal(canonicalizeIp(`::ffff:${hex}`), ip);
        if (a !== 0) {
          assert.equal(canonicalizeIp(`::${ip}`), ip);
          assert.equal(canonicalizeIp(`::${hex}`), ip);
        }
      }),
    );
  });

  test("no string makes it throw, and what it returns is a fixed point", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.ipV4Extended(), fc.ipV6().map((ip) => `${ip}%eth0`)), (text) => {
        const canonical = canonicalizeIp(text);
        if (canonical !== null) assert.equal(canonicalizeIp(canonical), canonical);
        if (text.includes("%")) assert.equal(canonical, null);
      }),
    );
  });
});

// app_version's integer encoding.

describe("encodeAppVersion", () => {
  const valid: [string, number][] = [
    ["2.3.0", 2_003_000],
    ["0.96", 96_000],
    ["2", 2_000_000],
    ["2.10.0", 2_010_000],
    ["2.9.9", 2_009_009],
    ["0", 0],
    ["0.0.0", 0],
    ["0.0.1", 1],
    ["999.999.999", 999_999_999],
    ["2.03", 2_003_000], // leading zeros are accepted
    ["007.007.007", 7_007_007],
  ];
  for (const [text, expected] of valid) {
    test(`"${text}" encodes to ${expected}`, () => {
      assert.equal(encodeAppVersion(text), expected);
    });
  }

  const invalid = [
    "1000", // part above 999
    "1.1000",
    "1.1.1000",
    "2.3.0.1", // four parts
    "",
    "v2",
    "2.",
    ".2",
    "2..3",
    " 2.3",
    "2.3 ",
    "-1",
    "1e3",
    "+1",
    "0x10",
    "2.3-beta",
    "２.３", // full-width digits are not ASCII digits
    "٢.٣", // Arabic-Indic digits
  ];
  for (const text of invalid) {
    test(`${JSON.stringify(text)} is rejected`, () => {
      assert.equal(encodeAppVersion(text), null);
    });
  }
});

/** A valid version text with its (major, minor, patch); missing parts are 0 and parts may carry leading zeros. */
const version = fc
  .record({
    parts: fc.tuple(fc.integer({ min: 0, max: 999 }), fc.integer({ min: 0, max: 999 }), fc.integer({ min: 0, max: 999 })),
    shown: fc.integer({ min: 1, max: 3 }),
    widths: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })),
  })
  .map(({ parts, shown, widths }) => {
    const triple = parts.map((p, i) => (i < shown ? p : 0)) as [number, number, number];
    const text = triple
      .slice(0, shown)
      .map((p, i) => String(p).padStart(widths[i]!, "0"))
      .join(".");
    return { text, triple };
  });

function compareTriples(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < 3; i++) {
    if (a[i]! !== b[i]!) return a[i]! < b[i]! ? -1 : 1;
  }
  return 0;
}

describe("app_version encoding properties", () => {
  test("the encoding orders versions as (major, minor, patch) do", () => {
    fc.assert(
      fc.property(version, version, (a, b) => {
        const ea = encodeAppVersion(a.text);
        const eb = encodeAppVersion(b.text);
        assert.ok(ea !== null && eb !== null, `${a.text} and ${b.text} are valid`);
        assert.equal(Math.sign(ea - eb), compareTriples(a.triple, b.triple));
      }),
    );
  });

  test("decode(encode(text)) is the MAJOR.MINOR.PATCH form of text", () => {
    fc.assert(
      fc.property(version, ({ text, triple }) => {
        const encoded = encodeAppVersion(text);
        assert.ok(encoded !== null);
        assert.equal(decodeAppVersion(encoded), triple.join("."));
      }),
    );
  });

  test("encode(decode(n)) is n for every encodable integer", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: MAX_APP_VERSION }), (n) => {
        assert.equal(encodeAppVersion(decodeAppVersion(n)), n);
      }),
    );
  });

  test("every valid encoding fits a Postgres integer", () => {
    fc.assert(
      fc.property(version, ({ text }) => {
        const encoded = encodeAppVersion(text)!;
        assert.ok(Number.isSafeInteger(encoded) && encoded >= 0 && encoded <= 2_147_483_647);
      }),
    );
  });
});

describe("decodeAppVersion", () => {
  const decoded: [number, string][] = [
    [0, "0.0.0"],
    [96_000, "0.96.0"],
    [2_003_000, "2.3.0"],
    [2_010_000, "2.10.0"],
    [999_999_999, "999.999.999"],
  ];
  for (const [value, expected] of decoded) {
    test(`${value} decodes to "${expected}"`, () => {
      assert.equal(decodeAppVersion(value), expected);
    });
  }

  for (const value of [-1, MAX_APP_VERSION + 1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
    test(`${value} throws RangeError`, () => {
      assert.throws(() => decodeAppVersion(value), RangeError);
    });
  }
});
