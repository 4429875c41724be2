import { NO_FACTS } from "../../src/ingest/quarantine-body.ts";
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { DataError, TransientError } from "../../src/errors.ts";
import { splitBySize } from "../../src/ingest/commit-batch.ts";
import { classifyPgError } from "../../src/db/query.ts";
import { emptyRowColumns, type Outcome, type QuarantineRecord, type SealedBatch } from "../../src/ingest/batch.ts";

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

/** A sealed batch of these outcomes: rows as columns, then the quarantine records. */
function batchOf(outcomes: readonly Outcome[]): SealedBatch {
  const rows = emptyRowColumns();
  const quarantine: QuarantineRecord[] = [];
  for (const o of outcomes) {
    if (o.kind === "quarantine") {
      quarantine.push(o);
      continue;
    }
    rows.messageId.push(o.messageId);
    rows.sentAt.push(o.sentAt?.getTime() ?? null);
    rows.receivedAt.push(o.receivedAt.getTime());
    rows.bodyLength.push(o.bodyLength);
    rows.userId.push(o.row.userId);
    rows.deviceType.push(o.row.deviceType);
    rows.maskedIp.push(o.row.maskedIp);
    rows.maskedDeviceId.push(o.row.maskedDeviceId);
    rows.locale.push(o.row.locale);
    rows.appVersion.push(o.row.appVersion);
    rows.createDate.push(o.row.createDate);
  }
  return { keyVersion: 1, rows, quarantine, vault: [], vaultEpoch: null };
}

describe("splitBySize", () => {
  test("a batch of ordinary rows is one statement", () => {
    const batch = batchOf(Array.from({ length: 1000 }, (_, i) => row(`r${i}`)));
    assert.deepEqual(splitBySize(batch, 8 << 20), [[0, 1000]]);
  });

  test("large quarantined bodies are spread over statements under the limit, in order, none lost; a larger one goes alone", () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 3 << 20 })), { maxLength: 60 }), (sizes) => {
        const batch = batchOf(sizes.map((n, i) => (n === 0 ? row(`m${i}`) : quarantined(`m${i}`, n))));
        const rows = batch.rows.messageId.length;
        const parts = splitBySize(batch, 2 << 20);
        // Consecutive ranges that cover every message once, in order.
        assert.equal(parts[0]![0], 0);
        assert.equal(parts.at(-1)![1], sizes.length);
        for (let i = 1; i < parts.length; i++) assert.equal(parts[i]![0], parts[i - 1]![1]);
        for (const [from, to] of parts) {
          let bytes = 0;
          for (let i = Math.max(from, rows); i < to; i++) bytes += 2 * batch.quarantine[i - rows]!.sealedBody!.ciphertext.length;
          assert.ok(to - from === 1 || bytes <= 2 << 20, `${to - from} messages, ${bytes} bytes`);
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
