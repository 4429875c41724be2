import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { MAX_REDACTED_CHARS, REDACTION_LIMITS } from "../../src/ingest/quarantine-body.ts";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { prepareOutcome } from "../../src/ingest/prepare.ts";

const p = createPseudonymizer(new Uint8Array(32).fill(7));
const at = new Date("2026-11-24T10:00:00Z");
const prepare = (body: string) => prepareOutcome({ messageId: "m-1", body, sentAt: at, receivedAt: at }, p);

test("a deeply nested body is quarantined with a bounded copy instead of crashing the pipeline", () => {
  for (const depth of [REDACTION_LIMITS.depth + 5, 10_000, 200_000]) {
    for (const body of ["[".repeat(depth) + "]".repeat(depth), `{"ip":"10.0.0.1","a":${"[".repeat(depth)}${"]".repeat(depth)}}`]) {
      const o = prepare(body);
      assert.equal(o.kind, "quarantine");
      if (o.kind !== "quarantine") continue;
      assert.ok(o.redactedBody !== null && o.redactedBody.length <= MAX_REDACTED_CHARS);
      assert.ok(!o.redactedBody.includes("10.0.0.1"));
      assert.equal(o.bodyLength, body.length);
      assert.ok(["not_an_object", "missing_field", "invalid_json"].includes(o.reason), o.reason);
    }
  }
  // Nesting within the limit keeps the shape, to the last level.
  const shallow = prepare(`{"a":${"[".repeat(4)}"10.0.0.1"${"]".repeat(4)}}`);
  assert.ok(shallow.kind === "quarantine" && shallow.redactedBody === `{"a":${"[".repeat(4)}"[string: 8 chars]"${"]".repeat(4)}}`);
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

test("a body masq could not process (unprocessable) still names its user, so erasure and export find its kept original", () => {
  // Whatever throws inside the middle (here the pseudonymizer, as a stack overflow or a closed key would) lands in
  // prepareOutcome's catch; the record keeps the original, so it must say whose it is.
  const failing = { pseudonymize: () => { throw new RangeError("Maximum call stack size exceeded"); } };
  const cases: [string, string | null][] = [
    [JSON.stringify({ user_id: "victim3", app_version: "1.0", device_type: "ios", ip: "203.0.113.3", device_id: "333-44-5555", locale: "en" }), "victim3"],
    ['{"user_id":"a","ip":"1.2.3.4","x":{"user_id":"b"}}', null],
    ['{"ip":"203.0.113.3"}', null],
  ];
  for (const [body, userId] of cases) {
    const o = prepareOutcome({ messageId: "m-9", body, sentAt: null, receivedAt: new Date(0) }, failing);
    assert.ok(o.kind === "quarantine" && o.reason === "unprocessable", body);
    assert.equal(o.originalBody, body);
    assert.deepEqual(o.facts, { userId, maskedIp: null, maskedDeviceId: null }, body);
  }
});
