import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { factsOfJson, factsOfText, MAX_REDACTED_CHARS, REDACTION_LIMITS, redactBody } from "../../src/ingest/quarantine-body.ts";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { prepareOutcome } from "../../src/ingest/prepare.ts";
import { withoutOriginals, type IncomingMessage, type Outcome } from "../../src/ingest/batch.ts";
import { amplifyingBody, RED_TEAM_BODIES, UNPARSEABLE_BY_JSONB } from "../helpers/red-team.ts";
import { SAMPLE, SAMPLE_BODY, sampleWith, TEST_KEY, VECTORS } from "./fixtures.ts";

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

/** Rejected bodies and their expected redacted copy. */
const cases: [name: string, body: unknown, redacted: unknown][] = [
  [
    "the sample without app_version: allowlisted fields kept, ip and device_id pseudonymised",
    { ...SAMPLE, app_version: undefined },
    { user_id: SAMPLE.user_id, device_type: "android", ip: `hmac:${VECTORS.sampleIp.hmac}`, locale: "RU", device_id: `hmac:${VECTORS.sampleDeviceId.hmac}` },
  ],
  [
    "an app_version that does not parse is kept: it is what the reason is about",
    { ...SAMPLE, app_version: "two point three" },
    { ...SAMPLE, app_version: "two point three", ip: `hmac:${VECTORS.sampleIp.hmac}`, device_id: `hmac:${VECTORS.sampleDeviceId.hmac}` },
  ],
  [
    "a non-canonical ip, masked as the canonical one",
    { ip: " 2001:DB8:0::1 " },
    { ip: `hmac:${VECTORS.ipv6.hmac}` },
  ],
  ["an ip that is not an address still gets a pseudonym", { ip: "999.1.2.3.junk" }, { ip: ip("999.1.2.3.junk") }],
  ["numbers under ip and device_id", { ip: 3350491015, device_id: 5934759281 }, { ip: ip("3350491015"), device_id: deviceId("5934759281") }],
  [
    "every other value becomes a marker of its type and length",
    { note: "hello", n: 5934759281, f: 1.5, ok: true, nothing: null, list: ["a", 1], obj: { k: "vv" } },
    { note: "[string: 5 chars]", n: "[number: 10 chars]", f: "[number: 3 chars]", ok: true, nothing: null, list: ["[string: 1 chars]", "[number: 1 chars]"], obj: { k: "[string: 2 chars]" } },
  ],
  [
    "ip and device_id below the top level are values like any other",
    { meta: { ip: "10.9.8.7", client: { device_id: "dev-abc-123" } } },
    { meta: { ip: "[string: 8 chars]", client: { device_id: "[string: 11 chars]" } } },
  ],
  [
    "allowlisted names below the top level are not kept",
    { meta: { user_id: "u-1", locale: "RU" } },
    { meta: { user_id: "[string: 3 chars]", locale: "[string: 2 chars]" } },
  ],
  [
    "an allowlisted field longer than its limit is a marker",
    { user_id: "u".repeat(129), device_type: { nested: "x" } },
    { user_id: "[string: 129 chars]", device_type: { nested: "[string: 1 chars]" } },
  ],
  [
    "keys that do not look like field names are numbered markers",
    { "10.1.2.3": 1, "device.id": "x", "ｄｅｖｉｃｅ_id": "y", a12345: 0, plain_key: "z" },
    { "[key 1: 8 chars]": "[number: 1 chars]", "[key 2: 9 chars]": "[string: 1 chars]", "[key 3: 9 chars]": "[string: 1 chars]", "[key 4: 6 chars]": "[number: 1 chars]", plain_key: "[string: 1 chars]" },
  ],
  ["a top-level JSON array", ["10.1.1.1", "fe80::1", 3], ["[string: 8 chars]", "[string: 7 chars]", "[number: 1 chars]"]],
  ["a top-level JSON string", "10.2.2.2", "[string: 8 chars]"],
];

describe("prepareOutcome of a rejected body", () => {
  for (const [name, body, redacted] of cases) {
    test(`redacts ${name}`, () => {
      const outcome = quarantined(JSON.stringify(body));
      assert.ok(outcome.redactedBody !== null);
      assert.deepEqual(JSON.parse(outcome.redactedBody), redacted);
      // The original stays in memory for the vault, which stores it encrypted.
      assert.equal(outcome.originalBody, JSON.stringify(body));
      assert.equal(withoutOriginals(outcome).kind === "quarantine" && (withoutOriginals(outcome) as Quarantined).originalBody, null);
    });
  }

  for (const { name, body, secrets } of RED_TEAM_BODIES) {
    test(`keeps nothing of the red-team body: ${name}`, () => {
      const outcome = quarantined(body);
      assert.equal(outcome.reason, "missing_field");
      const stored = JSON.stringify(withoutOriginals(outcome));
      for (const secret of secrets) {
        for (const spelling of [secret, secret.toLowerCase(), secret.toUpperCase(), JSON.stringify(secret).slice(1, -1)]) {
          assert.ok(!stored.includes(spelling), `${spelling} survived: ${outcome.redactedBody}`);
        }
      }
      // The allowlisted fields are still there to show whose event it was.
      assert.equal((JSON.parse(outcome.redactedBody!) as { user_id: string }).user_id, "rt-user");
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

describe("bounded redaction of hostile bodies", () => {
  const hostile: [string, string][] = [
    ['~1 MiB of "1:: "', amplifyingBody("colons", 1 << 20, "v6-0")],
    ['256 KiB of "1:: "', amplifyingBody("colons", 256 << 10, "v6-0")],
    ['256 KiB of "1.1.1.1."', amplifyingBody("dots", 256 << 10, "v4-0")],
    ["a wide array", JSON.stringify({ user_id: "w", a: Array.from({ length: 100_000 }, () => 1) })],
    ["a wide object", JSON.stringify(Object.fromEntries(Array.from({ length: 50_000 }, (_, i) => [`k${i}`, "1.2.3.4"])))],
    ["a deep array", "[".repeat(100_000) + "]".repeat(100_000)],
    ["a deep object", '{"a":'.repeat(10_000) + "1" + "}".repeat(10_000)],
    ["many long keys", JSON.stringify(Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`${i}:`.padEnd(3000, "x"), "y".repeat(3000)])))],
  ];
  for (const [name, body] of hostile) {
    test(`${name}: quarantined with a copy under ${MAX_REDACTED_CHARS} characters`, () => {
      const outcome = quarantined(body);
      assert.ok(outcome.redactedBody !== null);
      assert.ok(outcome.redactedBody.length <= MAX_REDACTED_CHARS, `${outcome.redactedBody.length} characters`);
      assert.equal(outcome.originalBody, body, "the original is kept whole, for the vault");
    });
  }

  test("a wide object says how many keys were left out, and its first keys are shown", () => {
    const body = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`k${i}`, i]));
    const out = redactBody(body, p) as Record<string, unknown>;
    assert.equal(out.k0, "[number: 1 chars]");
    assert.equal(out["[more]"], `${500 - REDACTION_LIMITS.perContainer} more keys`);
  });
});

/** Every string a redacted copy holds is one of these, or a kept value or a shown key (checked separately). */
const MARKER = /^(\[(string|number): \d+ chars\]|\[(array: \d+ items|object: \d+ keys)\]|\[\d+ more items\]|\d+ more keys|\[key \d+: \d+ chars\]|\[more\]|hmac:[0-9a-f]{64})$/;
const KEPT_FIELDS = new Set(["user_id", "device_type", "locale", "app_version"]);

/** Checks that `out` holds no string or number of `input` except what the allowlist keeps. */
function assertOnlyAllowed(input: unknown, out: unknown, top: boolean): void {
  const walk = (v: unknown, keyOk: (k: string) => boolean): void => {
    if (typeof v === "string") assert.match(v, MARKER);
    else if (typeof v === "number") assert.fail(`a number survived: ${v}`);
    else if (Array.isArray(v)) v.forEach((x) => walk(x, keyOk));
    else if (v !== null && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) {
        assert.ok(MARKER.test(k) || (/^[A-Za-z_][A-Za-z0-9_]{0,39}$/.test(k) && keyOk(k)), `key ${JSON.stringify(k)} survived`);
        walk(x, keyOk);
      }
    }
  };
  const inputKeys = new Set<string>();
  const collect = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(collect);
    else if (v !== null && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) {
        inputKeys.add(k);
        collect(x);
      }
    }
  };
  collect(input);
  if (top && input !== null && typeof input === "object" && !Array.isArray(input) && out !== null && typeof out === "object") {
    for (const [k, x] of Object.entries(out as Record<string, unknown>)) {
      if (KEPT_FIELDS.has(k) && (typeof x === "number" || (typeof x === "string" && !MARKER.test(x)))) {
        assert.equal(x, (input as Record<string, unknown>)[k], `${k} is kept as it was`);
        continue;
      }
      assert.ok(MARKER.test(k) || inputKeys.has(k), `key ${JSON.stringify(k)} survived`);
      walk(x, (key) => inputKeys.has(key));
    }
    return;
  }
  walk(out, (key) => inputKeys.has(key));
}

describe("redaction properties", () => {
  const anyKey = fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.constantFrom("user_id", "device_type", "locale", "app_version", "ip", "device_id", "__proto__", "constructor"));
  const anyJson = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: "small" },
      fc.string({ unit: "binary" }),
      fc.ipV4(),
      fc.ipV6(),
      fc.double(),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      fc.array(tie("value"), { maxLength: 5 }),
      fc.dictionary(anyKey, tie("value"), { maxKeys: 6, noNullPrototype: true }),
    ),
  })).value;
  const body = fc.oneof(anyJson, fc.dictionary(anyKey, anyJson, { maxKeys: 10, noNullPrototype: true }));

  test("nothing of the input survives but allowlisted values, field-name keys, pseudonyms and markers", () => {
    fc.assert(
      fc.property(body, (b) => {
        const json = JSON.parse(JSON.stringify(b) ?? "null") as unknown;
        const out = JSON.parse(JSON.stringify(redactBody(json, p))) as unknown;
        assertOnlyAllowed(json, out, true);
      }),
      { numRuns: 500 },
    );
  });

  test("no string of the input survives unless it is an allowlisted top-level value or a field-name key", () => {
    const secret = fc.string({ unit: "binary", minLength: 6 }).filter((s) => !/^[A-Za-z0-9_ :.[\]-]*$/.test(s));
    fc.assert(
      fc.property(fc.array(fc.tuple(anyKey, secret), { maxLength: 8 }), fc.array(secret, { maxLength: 4 }), (pairs, list) => {
        const input: Record<string, unknown> = { ...Object.fromEntries(pairs), nested: { list, deep: [{ v: list[0] ?? null }] } };
        const out = JSON.stringify(redactBody(JSON.parse(JSON.stringify(input)), p));
        const kept = [...KEPT_FIELDS].map((k) => input[k]).filter((v): v is string => typeof v === "string");
        for (const [k, v] of pairs) {
          if (kept.some((x) => x.includes(v))) continue;
          assert.ok(!out.includes(JSON.stringify(v).slice(1, -1)), `value ${JSON.stringify(v)} under ${JSON.stringify(k)} survived`);
        }
        for (const v of list) if (!kept.some((x) => x.includes(v))) assert.ok(!out.includes(JSON.stringify(v).slice(1, -1)), `value ${JSON.stringify(v)} survived`);
      }),
      { numRuns: 300 },
    );
  });

  test("the copy is never longer than MAX_REDACTED_CHARS", () => {
    const long = fc.string({ unit: "binary", minLength: 0, maxLength: 400 });
    const wide = fc.dictionary(long, fc.oneof(long, fc.array(long, { maxLength: 80 })), { maxKeys: 120, noNullPrototype: true });
    fc.assert(
      fc.property(fc.oneof(wide, fc.array(wide, { maxLength: 4 })), (b) => {
        const out = JSON.stringify(redactBody(JSON.parse(JSON.stringify(b)), p));
        assert.ok(out.length <= MAX_REDACTED_CHARS, `${out.length} characters`);
      }),
      { numRuns: 100 },
    );
  });
});

/** Who a quarantine record is about (102_ingest.sql): what the redacted copy keeps in clear, decided in TypeScript. */
test("factsOfJson: the top-level user_id kept in clear, and the pseudonyms the redacted copy shows", () => {
  const cases: [unknown, string | null][] = [
    [{ user_id: "u-1" }, "u-1"],
    [{ user_id: 42 }, "42"],
    [{ user_id: true }, "true"],
    [{ user_id: "" }, null],
    [{ user_id: "x".repeat(129) }, null],
    [{ user_id: "a\u0000b" }, null], // no row could hold it
    [{ user_id: "\ud800" }, null],
    [{ user_id: { id: "u-2" } }, null],
    [{ nested: { user_id: "u-3" } }, null],
    [["u-5"], null],
    ["u-6", null],
  ];
  for (const [json, user] of cases) assert.equal(factsOfJson(json, p).userId, user, JSON.stringify(json));
});

test("factsOfJson agrees with the redacted copy for the red-team bodies jsonb cannot hold", () => {
  for (const b of UNPARSEABLE_BY_JSONB) {
    const json: unknown = JSON.parse(b.body);
    const facts = factsOfJson(json, p);
    const copy = redactBody(json, p) as Record<string, unknown>;
    assert.deepEqual(facts, { userId: b.user, maskedIp: p.pseudonymize("ip", b.ip), maskedDeviceId: p.pseudonymize("device_id", b.deviceId) }, b.name);
    assert.equal(copy.ip, `hmac:${facts.maskedIp}`);
    assert.equal(copy.device_id, `hmac:${facts.maskedDeviceId}`);
  }
});

test("factsOfText: a body that is not JSON names the one user all its user_id members agree on", () => {
  const cases: [string, string | null][] = [
    ['{"user_id":"u-1","ip":"1.2.3.4"', "u-1"],
    ['{"user_id" : "u-1", "x": {"user_id":"u-1"}', "u-1"],
    ['{"user_id":"u-1"} {"user_id":"u-2"}', null],
    ['{"user_id":"esc\\"aped"', 'esc"aped'],
    ['{"user_id":"a\\u0000b"', null],
    ["user_id=u-1", null],
    ["", null],
  ];
  for (const [body, user] of cases) assert.deepEqual(factsOfText(body), { userId: user, maskedIp: null, maskedDeviceId: null }, body);
});
