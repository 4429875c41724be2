import assert from "node:assert/strict";
import { isIPv4, isIPv6 } from "node:net";
import { describe, test } from "node:test";
import fc from "fast-check";
import { canonicalizeIp } from "../../src/ingest/login-event.ts";

const cases: [input: string, expected: string | null, why: string][] = [
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
  for (const [input, expected, why] of cases) {
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
