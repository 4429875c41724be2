import assert from "node:assert/strict";
import { test } from "node:test";
import { factsOfJson, factsOfText, redactBody } from "../../src/ingest/quarantine-body.ts";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { UNPARSEABLE_BY_JSONB } from "../helpers/red-team.ts";

const p = createPseudonymizer(new Uint8Array(32).fill(9));

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
