import assert from "node:assert/strict";
import { createSecretKey } from "node:crypto";
import { test } from "node:test";
import type { Outcome } from "../../src/ingest/batch.ts";
import { VaultSealer } from "../../src/ingest/vault-sealer.ts";

/** The sealer's memory of what the vault holds, against the vault epoch (101_keys_and_vault.sql: erase and prune advance it). */
const key = new Uint8Array(32).fill(3);
const dataKeys = { reserve: () => Promise.resolve({ id: "00000000-0000-0000-0000-000000000001", key, keyObject: createSecretKey(key) }) };
const at = new Date("2026-11-30T00:00:00Z");

function rows(ids: string[]): Outcome[] {
  return ids.map((id) => ({
    messageId: `m-${id}`,
    sentAt: at,
    receivedAt: at,
    bodyLength: 10,
    kind: "row",
    row: { userId: "u", deviceType: "ios", maskedIp: `ip-${id}`, maskedDeviceId: `dev-${id}`, locale: null, appVersion: 1, createDate: "2026-11-30" },
    pii: { ip: `10.0.0.${id}`, deviceId: `d-${id}` },
  }));
}

test("a batch committed under the known epoch is remembered: its values are not sealed again", async () => {
  const s = new VaultSealer(dataKeys);
  const a = await s.seal(rows(["1"]), 1);
  assert.equal(a.vault.length, 2);
  s.committed(a, { min: 0, max: 0 });
  const b = await s.seal(rows(["1"]), 1);
  assert.equal(b.vault.length, 0);
  assert.equal(b.vaultEpoch, 0, "a batch that leaves values out says under which epoch");
});

test("a batch that settles after an erasure advanced the epoch teaches nothing (the erasure may have deleted its values)", async () => {
  const s = new VaultSealer(dataKeys);
  const a = await s.seal(rows(["1"]), 1);
  // An erasure at epoch 1 deleted ip-1 after batch a committed under epoch 0; a prepare thread hears of the erasure
  // (the next batch's epoch) before it hears that a settled.
  s.staleVault(1);
  s.committed(a, { min: 0, max: 0 });
  const b = await s.seal(rows(["1"]), 1);
  assert.equal(b.vault.length, 2, "ip-1 and dev-1 are sealed again, so the next row keeps its values recoverable");
  assert.equal(b.vaultEpoch, null);
});

test("a batch whose statements committed under different epochs teaches nothing, and moves the sealer to the later one", async () => {
  const s = new VaultSealer(dataKeys);
  const a = await s.seal(rows(["1", "2"]), 1);
  s.committed(a, { min: 0, max: 2 });
  assert.equal(s.vaultEpoch, 2);
  const b = await s.seal(rows(["1", "2"]), 1);
  assert.equal(b.vault.length, 4);
  // Committed under the epoch it now knows: remembered.
  s.committed(b, { min: 2, max: 2 });
  assert.equal((await s.seal(rows(["1", "2"]), 1)).vault.length, 0);
});

test("a batch that did not commit, or committed nothing, teaches nothing", async () => {
  const s = new VaultSealer(dataKeys);
  const a = await s.seal(rows(["1"]), 1);
  s.committed(a, undefined);
  assert.equal((await s.seal(rows(["1"]), 1)).vault.length, 2);
});

test("a batch that did not write all its vault rows (some messages were duplicates) teaches nothing (issue 17)", async () => {
  const s = new VaultSealer(dataKeys);
  const a = await s.seal(rows(["1", "2"]), 1);
  s.committed(a, { min: 0, max: 0, partial: true });
  const b = await s.seal(rows(["1", "2"]), 1);
  assert.equal(b.vault.length, 4, "its values are sealed again, so a new message brings them in");
});
