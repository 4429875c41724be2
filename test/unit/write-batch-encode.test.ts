import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { describe, test } from "node:test";
import fc from "fast-check";
import { arrayLiteral } from "../../src/ingest/write-batch.ts";

// node-postgres's own encoding of a parameter: a batch a prepare thread encodes must reach Postgres byte for byte as
// the same batch would from the main thread.
const pgUtils = createRequire(import.meta.url)("pg/lib/utils.js") as { prepareValue(v: unknown): string };

const element = fc.oneof(
  fc.string({ unit: "binary" }),
  fc.constantFrom('"', "\\", '\\"', "{", "}", ",", "NULL", " ", ""),
  fc.integer(),
  fc.constant(null),
  fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u)),
  fc.uint8Array({ maxLength: 40 }),
);

describe("arrayLiteral", () => {
  test("writes an array parameter exactly as node-postgres does (text, quotes, backslashes, NULL, numbers, bytea)", () => {
    fc.assert(
      fc.property(fc.array(element, { maxLength: 30 }), (values) => {
        assert.equal(arrayLiteral(values), pgUtils.prepareValue(values));
      }),
      { numRuns: 500 },
    );
  });

  test("an empty array", () => {
    assert.equal(arrayLiteral([]), "{}");
  });
});
