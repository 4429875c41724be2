import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { decodeAppVersion, encodeAppVersion, MAX_APP_VERSION } from "../../src/ingest/login-event.ts";

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
