import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConfigError, FatalError } from "../../src/errors.ts";
import { LocalKeyProvider, localMasterKeyId } from "../../src/keys/key-provider.ts";

const A = new Uint8Array(32).map((_, i) => 0x10 + i);
const B = new Uint8Array(32).map((_, i) => 0x90 + i);
const hex = (k: Uint8Array) => Buffer.from(k).toString("hex");
const ctx = { purpose: "vault" as const, keyId: "7f2c3b2e-0000-4000-8000-000000000001" };

describe("the local key provider", () => {
  test("wraps a generated key so that it unwraps to the same bytes, under the current master key's id", async () => {
    const p = new LocalKeyProvider(Uint8Array.from(A));
    const g = await p.generateKey(ctx);
    assert.equal(g.plaintext.length, 32);
    assert.equal(g.masterKeyId, localMasterKeyId(A));
    assert.deepEqual(await p.unwrap(g.wrapped, g.masterKeyId, ctx), g.plaintext);
    assert.ok(!Buffer.from(g.wrapped).toString("hex").includes(hex(g.plaintext)), "the wrapped form does not hold the key");
  });

  test("a wrapped key does not unwrap for another purpose or another key id (the context is bound)", async () => {
    const p = new LocalKeyProvider(Uint8Array.from(A));
    const g = await p.generateKey(ctx);
    await assert.rejects(p.unwrap(g.wrapped, g.masterKeyId, { ...ctx, purpose: "pseudonym" }), FatalError);
    await assert.rejects(p.unwrap(g.wrapped, g.masterKeyId, { ...ctx, keyId: "another" }), FatalError);
  });

  test("a tampered wrapped key fails loudly", async () => {
    const p = new LocalKeyProvider(Uint8Array.from(A));
    const g = await p.generateKey(ctx);
    const tampered = Uint8Array.from(g.wrapped);
    tampered[tampered.length - 1]! ^= 1;
    await assert.rejects(p.unwrap(tampered, g.masterKeyId, ctx), /does not unwrap/);
  });

  test("under a master key it does not hold: a ConfigError naming MASQ_MASTER_KEY, with no key bytes in it", async () => {
    const g = await new LocalKeyProvider(Uint8Array.from(A)).generateKey(ctx);
    await assert.rejects(new LocalKeyProvider(Uint8Array.from(B)).unwrap(g.wrapped, g.masterKeyId, ctx), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.setting, "MASQ_MASTER_KEY");
      assert.ok(!err.message.includes(hex(A)) && !err.message.includes(hex(B)) && !err.message.includes(hex(g.plaintext)));
      return true;
    });
  });

  test("rotation: the previous master key still unwraps, and rewrap moves a key under the current one", async () => {
    const old = new LocalKeyProvider(Uint8Array.from(A));
    const g = await old.generateKey(ctx);
    const both = new LocalKeyProvider(Uint8Array.from(B), [Uint8Array.from(A)]);
    assert.deepEqual(await both.unwrap(g.wrapped, g.masterKeyId, ctx), g.plaintext);
    const moved = await both.rewrap(g.wrapped, g.masterKeyId, ctx);
    assert.equal(moved.masterKeyId, localMasterKeyId(B));
    const onlyNew = new LocalKeyProvider(Uint8Array.from(B));
    assert.deepEqual(await onlyNew.unwrap(moved.wrapped, moved.masterKeyId, ctx), g.plaintext);
  });

  test("counts its calls for the metrics", async () => {
    const calls: string[] = [];
    const p = new LocalKeyProvider(Uint8Array.from(A), [], (op, ok) => calls.push(`${op}:${ok}`));
    const g = await p.generateKey(ctx);
    await p.unwrap(g.wrapped, g.masterKeyId, ctx);
    await p.unwrap(g.wrapped, g.masterKeyId, { ...ctx, keyId: "x" }).catch(() => undefined);
    assert.deepEqual(calls, ["GenerateDataKey:true", "Decrypt:true", "Decrypt:false"]);
  });
});
