import assert from "node:assert/strict";
import { test } from "node:test";
import { subjectFingerprint } from "../../src/keys/audit-key.ts";

const key = { version: 1, key: new Uint8Array(32).fill(7) };

test("a subject fingerprint is stable, keyed, versioned, and does not contain the id", () => {
  const a = subjectFingerprint(key, "user-123");
  assert.equal(a, subjectFingerprint(key, "user-123"));
  assert.match(a, /^v1:[0-9a-f]{32}$/);
  assert.notEqual(a, subjectFingerprint(key, "user-124"));
  assert.notEqual(a, subjectFingerprint({ version: 1, key: new Uint8Array(32).fill(8) }, "user-123"));
  assert.ok(!a.includes("user-123"));
  // No separator ambiguity with the domain prefix.
  assert.notEqual(subjectFingerprint(key, ""), subjectFingerprint(key, "\0"));
});
