import { NO_FACTS } from "../../src/ingest/quarantine-facts.ts";
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { DataError, TransientError } from "../../src/errors.ts";
import { splitBySize } from "../../src/ingest/commit-batch.ts";
import { classifyPgError } from "../../src/sink/pg-errors.ts";
import type { Outcome } from "../../src/ingest/write-batch.ts";

const at = new Date("2026-12-01T00:00:00Z");

function quarantined(id: string, ciphertextBytes: number): Outcome {
  return {
    messageId: id,
    sentAt: at,
    receivedAt: at,
    bodyLength: ciphertextBytes,
    kind: "quarantine",
    reason: "missing_field",
    detail: "missing device_id",
    redactedBody: "{}",
    originalBody: null,
    sealedBody: { dataKeyId: "k", nonce: Buffer.alloc(12), ciphertext: Buffer.alloc(ciphertextBytes) },
    facts: NO_FACTS,
  };
}

function row(id: string): Outcome {
  return {
    messageId: id,
    sentAt: at,
    receivedAt: at,
    bodyLength: 200,
    kind: "row",
    row: { userId: id, deviceType: "ios", maskedIp: "a".repeat(64), maskedDeviceId: "b".repeat(64), locale: null, appVersion: 1, createDate: "2026-12-01" },
  };
}

describe("splitBySize", () => {
  test("a batch of ordinary rows is one statement", () => {
    const outcomes = Array.from({ length: 1000 }, (_, i) => row(`r${i}`));
    assert.deepEqual(splitBySize(outcomes, 8 << 20), [outcomes]);
  });

  test("large quarantined bodies are spread over statements under the limit, in order, none lost; a larger one goes alone", () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 3 << 20 })), { maxLength: 60 }), (sizes) => {
        const outcomes = sizes.map((n, i) => (n === 0 ? row(`m${i}`) : quarantined(`m${i}`, n)));
        const parts = splitBySize(outcomes, 2 << 20);
        assert.deepEqual(parts.flat(), outcomes);
        for (const part of parts) {
          const bytes = part.reduce((a, o) => a + (o.kind === "quarantine" ? 2 * o.sealedBody!.ciphertext.length : 0), 0);
          assert.ok(part.length === 1 || bytes <= 2 << 20, `${part.length} outcomes, ${bytes} bytes`);
        }
      }),
    );
  });
});

describe("classifyPgError", () => {
  test("a RangeError from encoding a statement is bad data, not an unreachable Postgres", () => {
    const err = classifyPgError(new RangeError("Invalid string length"));
    assert.ok(err instanceof DataError);
    assert.equal(err.message, "masq could not encode the statement for Postgres (Invalid string length)");
  });

  test("a socket error is still transient", () => {
    assert.ok(classifyPgError(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" })) instanceof TransientError);
    assert.ok(classifyPgError(new Error("Connection terminated unexpectedly")) instanceof TransientError);
  });
});
