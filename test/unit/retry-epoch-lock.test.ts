import assert from "node:assert/strict";
import { test } from "node:test";
import { errorLine, FatalError, TransientError } from "../../src/errors.ts";
import { retryEpochLock } from "../../src/lifecycle/erase-subject.ts";

const timedOut = () => new TransientError("Postgres: canceling statement due to lock timeout (SQLSTATE 55P03)", "pg_55P03");
const fast = { attempts: 3, firstPauseMs: 1, maxPauseMs: 2 };

test("a deleter whose wait for the vault epoch timed out tries again, and goes on once it gets it", async () => {
  let calls = 0;
  const r = await retryEpochLock(() => (++calls < 3 ? Promise.reject(timedOut()) : Promise.resolve("deleted")), undefined, fast);
  assert.equal(r, "deleted");
  assert.equal(calls, 3);
});

test("after its last try it stops with one line naming the open transaction to look for", async () => {
  let calls = 0;
  await assert.rejects(
    retryEpochLock(() => {
      calls++;
      return Promise.reject(timedOut());
    }, undefined, fast),
    (err: unknown) => {
      const line = errorLine(err);
      assert.match(line, /^masq: the vault epoch stayed locked \(masq\.vault_epoch\): .*idle in transaction.*masq ends only sessions of masq roles/);
      assert.ok(!line.includes("\n"));
      return true;
    },
  );
  assert.equal(calls, 3);
});

test("after its last try, a wait already told as who held the lock keeps that line", async () => {
  const named = new TransientError("the vault epoch or a record being deleted is held by session 7 of login postgres: …", "pg_55P03", {
    what: "the vault epoch or a record being deleted is held by session 7 of login postgres",
    object: "relation masq.vault_epoch",
    hint: "masq never ends a superuser's session",
  });
  await assert.rejects(
    retryEpochLock(() => Promise.reject(named), undefined, fast),
    (err: unknown) => err === named,
  );
});

test("any other error is not retried", async () => {
  let calls = 0;
  await assert.rejects(
    retryEpochLock(() => {
      calls++;
      return Promise.reject(new FatalError("no erasure 1 in progress of this login"));
    }, undefined, fast),
    /no erasure 1/,
  );
  assert.equal(calls, 1);
});
