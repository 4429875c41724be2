import assert from "node:assert/strict";
import { test } from "node:test";
import { errorLine, exitCodeFor, TransientError } from "../../src/errors.ts";
import { explainLockTimeout } from "../../src/db/lock-watch.ts";
import { classifyPgError } from "../../src/db/query.ts";

const pgError = (code: string, message: string) => Object.assign(new Error(message), { code, severity: "ERROR" });

test("a lock or statement timeout is a wait that ran out, never told as Postgres being unavailable", () => {
  for (const [code, message] of [
    ["55P03", "canceling statement due to lock timeout"],
    ["57014", "canceling statement due to statement timeout"],
  ] as const) {
    const err = classifyPgError(pgError(code, message));
    assert.ok(err instanceof TransientError, code);
    assert.equal(err.cause_, `pg_${code}`);
    assert.doesNotMatch(errorLine(err), /not available|cannot reach/, code);
    assert.match(errorLine(err), code === "55P03" ? /a lock masq waits for is held by another session/ : /ran past its time limit/);
  }
  // An outage is still one.
  assert.match(errorLine(classifyPgError(pgError("57P03", "the database system is starting up"))), /Postgres is not available/);
});

test("a timed-out wait names the session that held it, its login and why masq did not end it", () => {
  const timedOut = classifyPgError(pgError("55P03", "canceling statement due to lock timeout"));
  const err = explainLockTimeout(timedOut, "the active pseudonym key", [
    { pid: 4711, login: "masq_service", lock: "a row of masq.pseudonym_keys", outcome: "not permitted (pg_signal_backend)" },
    { pid: 4712, login: "masq_service", lock: "a row of masq.pseudonym_keys", outcome: "ended" },
  ]);
  assert.ok(err instanceof TransientError);
  assert.equal(err.cause_, "pg_55P03", "still a lock timeout: a deleter's retry recognises it");
  assert.equal(
    errorLine(err),
    "masq: the active pseudonym key is held by session 4711 of login masq_service (a row of masq.pseudonym_keys): masq may not end it: " +
      "the schema owner lacks pg_signal_backend (GRANT it, deploy/sql/login-roles.sql): end it (SELECT pg_terminate_backend(4711)) or let it finish, and run this again",
  );
  assert.equal(exitCodeFor(err), 1);
  const superuser = explainLockTimeout(timedOut, "the vault epoch or a record being deleted", [{ pid: 9, login: "postgres", lock: "relation masq.vault_epoch", outcome: "superuser" }]);
  assert.match(errorLine(superuser), /held by session 9 of login postgres \(relation masq.vault_epoch\): masq never ends a superuser's session/);
  // Nothing left that held it (all ended), or another error: unchanged.
  assert.equal(explainLockTimeout(timedOut, "x", [{ pid: 1, login: "a", lock: "l", outcome: "ended" }]), timedOut);
  const other = new Error("boom");
  assert.equal(explainLockTimeout(other, "x", [{ pid: 1, login: "a", lock: "l", outcome: "superuser" }]), other);
});
