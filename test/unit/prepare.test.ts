import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { MAX_REDACT_DEPTH } from "../../src/mask/mask-event.ts";
import { createPseudonymizer } from "../../src/mask/pseudonymize.ts";
import { prepareOutcome } from "../../src/runner/prepare.ts";

const p = createPseudonymizer(new Uint8Array(32).fill(7));
const at = new Date("2026-11-24T10:00:00Z");
const prepare = (body: string) => prepareOutcome({ messageId: "m-1", body, sentAt: at, receivedAt: at }, p);

test("a deeply nested body is quarantined without its body instead of crashing the pipeline", () => {
  for (const depth of [MAX_REDACT_DEPTH + 5, 10_000, 200_000]) {
    for (const body of ["[".repeat(depth) + "]".repeat(depth), `{"ip":"10.0.0.1","a":${"[".repeat(depth)}${"]".repeat(depth)}}`]) {
      const o = prepare(body);
      assert.equal(o.kind, "quarantine");
      if (o.kind !== "quarantine") continue;
      assert.equal(o.redactedBody, null);
      assert.equal(o.bodyLength, body.length);
      assert.ok(["not_an_object", "missing_field", "invalid_json"].includes(o.reason), o.reason);
    }
  }
  // Nesting within the limit keeps the (redacted) body.
  const shallow = prepare(`{"a":${"[".repeat(10)}"10.0.0.1"${"]".repeat(10)}}`);
  assert.ok(shallow.kind === "quarantine" && shallow.redactedBody !== null && !shallow.redactedBody.includes("10.0.0.1"));
});

test("prepareOutcome is total: no body whatsoever throws", () => {
  const deep = fc.integer({ min: 0, max: 3000 }).map((d) => "[".repeat(d) + "]".repeat(d));
  fc.assert(
    fc.property(fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.json(), fc.jsonValue().map((v) => JSON.stringify(v)), deep), (body) => {
      const o = prepare(body);
      assert.ok(o.kind === "row" || o.kind === "quarantine");
      assert.equal(o.messageId, "m-1");
    }),
    { numRuns: 500 },
  );
});
