import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, utf8ToBytes } from "@noble/hashes/utils.js";
import { ConfigError } from "../../src/errors.ts";
import { maskEvent } from "../../src/ingest/prepare.ts";
import { parsePseudonymKey, createPseudonymizer, type PiiKind } from "../../src/ingest/pseudonymize.ts";
import { parseLoginEvent, type LoginEvent } from "../../src/ingest/login-event.ts";
import { SAMPLE_BODY, sampleWith, TEST_KEY, TEST_KEY_HEX, VECTORS } from "./fixtures.ts";

const p = createPseudonymizer(TEST_KEY);

function parsed(body: string): LoginEvent {
  const result = parseLoginEvent(body);
  assert.ok(result.ok);
  return result.event;
}

describe("pseudonymize", () => {
  for (const v of Object.values(VECTORS)) {
    test(`${v.kind} "${v.value}" matches HMAC-SHA256 computed by openssl`, () => {
      assert.equal(p.pseudonymize(v.kind, v.value), v.hmac);
    });
  }

  test("is lowercase hex of 64 digits, and the same for the same input", () => {
    fc.assert(
      fc.property(fc.constantFrom<PiiKind>("ip", "device_id"), fc.string({ unit: "binary" }), (kind, value) => {
        const first = p.pseudonymize(kind, value);
        assert.match(first, /^[0-9a-f]{64}$/);
        assert.equal(p.pseudonymize(kind, value), first);
        assert.equal(createPseudonymizer(TEST_KEY).pseudonymize(kind, value), first);
      }),
    );
  });

  test("is byte-identical to the @noble/hashes HMAC masq used before node:crypto, for any string (lone surrogates too)", () => {
    const reference = (kind: PiiKind, value: string) => bytesToHex(hmac(sha256, TEST_KEY, utf8ToBytes(`${kind}:${value}`)));
    fc.assert(
      fc.property(fc.constantFrom<PiiKind>("ip", "device_id"), fc.string({ unit: "binary" }), (kind, value) => {
        assert.equal(p.pseudonymize(kind, value), reference(kind, value));
      }),
      { numRuns: 2_000 },
    );
    for (const value of ["\ud800", "a\udfffb", "\udbff\udc00", "é", "\u0000"]) assert.equal(p.pseudonymize("ip", value), reference("ip", value));
  });

  test("differs between kinds for the same value", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), (value) => {
        assert.notEqual(p.pseudonymize("ip", value), p.pseudonymize("device_id", value));
      }),
    );
    assert.notEqual(p.pseudonymize("device_id", VECTORS.sampleIp.value), VECTORS.sampleIp.hmac);
  });

  test("differs between keys for the same input", () => {
    const other = createPseudonymizer(Uint8Array.from({ length: 32 }, (_, i) => i + 1));
    for (const v of Object.values(VECTORS)) assert.notEqual(other.pseudonymize(v.kind, v.value), v.hmac);
  });

  test("works from the key as configured (hex text)", () => {
    const fromText = createPseudonymizer(parsePseudonymKey(TEST_KEY_HEX));
    assert.equal(fromText.pseudonymize("ip", VECTORS.sampleIp.value), VECTORS.sampleIp.hmac);
  });
});

describe("maskEvent", () => {
  test("replaces ip and device_id of the sample with their pseudonyms and keeps the other fields", () => {
    const row = maskEvent(parsed(SAMPLE_BODY), new Date("2026-03-01T12:00:00Z"), p);
    assert.deepEqual(row, {
      userId: "424cdd21-063a-43a7-b91b-7ca1a833afae",
      deviceType: "android",
      maskedIp: VECTORS.sampleIp.hmac,
      maskedDeviceId: VECTORS.sampleDeviceId.hmac,
      locale: "RU",
      appVersion: 2_003_000,
      createDate: "2026-03-01",
    });
  });

  const sameAddress: [written: string, canonical: keyof typeof VECTORS][] = [
    ["2001:db8::1", "ipv6"],
    ["2001:DB8:0::1", "ipv6"],
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "ipv6"],
    ["::ffff:199.172.111.135", "sampleIp"],
    ["::ffff:c7ac:6f87", "sampleIp"],
  ];
  for (const [written, canonical] of sameAddress) {
    test(`masks ip "${written}" as its canonical form "${VECTORS[canonical].value}"`, () => {
      const row = maskEvent(parsed(sampleWith({ ip: written })), new Date(), p);
      assert.equal(row.maskedIp, VECTORS[canonical].hmac);
    });
  }

  const dates: [sentAt: string, createDate: string][] = [
    ["2026-03-01T23:30:00-05:00", "2026-03-02"],
    ["2026-03-02T00:30:00+01:00", "2026-03-01"],
    ["2026-03-01T00:00:00Z", "2026-03-01"],
    ["2026-02-28T23:59:59.999Z", "2026-02-28"],
    ["2024-02-29T12:00:00Z", "2024-02-29"],
  ];
  for (const [sentAt, createDate] of dates) {
    test(`create_date of a message sent at ${sentAt} is the UTC date ${createDate}`, () => {
      assert.equal(maskEvent(parsed(SAMPLE_BODY), new Date(sentAt), p).createDate, createDate);
    });
  }

  test("holds neither the raw ip nor the raw device_id", () => {
    const text = JSON.stringify(maskEvent(parsed(SAMPLE_BODY), new Date(), p));
    assert.ok(!text.includes(VECTORS.sampleIp.value));
    assert.ok(!text.includes(VECTORS.sampleDeviceId.value));
  });
});

describe("parsePseudonymKey", () => {
  const KEY_BASE64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // base64 of bytes 0x00..0x1f
  const accepted: [name: string, text: string, expected: Uint8Array][] = [
    ["64 hex digits", TEST_KEY_HEX, TEST_KEY],
    ["64 uppercase hex digits", TEST_KEY_HEX.toUpperCase(), TEST_KEY],
    ["hex: prefix", `hex:${TEST_KEY_HEX}`, TEST_KEY],
    ["base64 of 32 bytes", KEY_BASE64, TEST_KEY],
    ["base64: prefix", `base64:${KEY_BASE64}`, TEST_KEY],
    ["url-safe base64", "4OHi4-Tl5ufo6err7O3u7_Dx8vP09fb3-Pn6-_z9_v8=", Uint8Array.from({ length: 32 }, (_, i) => 224 + i)],
    ["a trailing newline, as in a key file", `${TEST_KEY_HEX}\n`, TEST_KEY],
    ["more than 32 bytes", "ab".repeat(64), new Uint8Array(64).fill(0xab)],
  ];
  for (const [name, text, expected] of accepted) {
    test(`accepts ${name}`, () => {
      assert.deepEqual(parsePseudonymKey(text), expected);
    });
  }

  const rejected: [name: string, text: string][] = [
    ["31 bytes of hex", TEST_KEY_HEX.slice(0, 62)],
    ["31 bytes of base64", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg=="],
    ["31 bytes with hex: prefix", `hex:${TEST_KEY_HEX.slice(0, 62)}`],
    ["odd-length hex", `hex:${TEST_KEY_HEX}f`],
    ["hex: prefix with non-hex digits", `hex:${"zz".repeat(32)}`],
    ["base64: prefix with invalid characters", `base64:${"*".repeat(44)}`],
    ["garbage", "this is not a key, it is a sentence!"],
    ["a password", "correct horse battery staple"],
    ["empty", ""],
  ];
  for (const [name, text] of rejected) {
    test(`rejects ${name} with a ConfigError naming the setting, not the key`, () => {
      assert.throws(
        () => parsePseudonymKey(text),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.equal(err.setting, "MASQ_PSEUDONYM_KEY");
          assert.match(err.message, /^MASQ_PSEUDONYM_KEY\b/);
          const secret = text.trim().replace(/^(hex|base64):/, "");
          if (secret !== "") {
            assert.ok(!err.message.includes(secret), err.message);
            assert.ok(!err.message.includes(secret.slice(0, 12)), err.message);
          }
          return true;
        },
      );
    });
  }

  test("names the setting it was given", () => {
    assert.throws(() => parsePseudonymKey("abcd", "MASQ_PSEUDONYM_KEY_FILE"), { name: "ConfigError", setting: "MASQ_PSEUDONYM_KEY_FILE" });
  });
});
