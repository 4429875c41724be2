import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConfigError, DataError, errorLine, exitCodeFor, FatalError, InterruptedError, TransientError, UnreachableError } from "../../src/errors.ts";

const CLASS_NAMES = /ConfigError|TransientError|FatalError|DataError|UnreachableError|InterruptedError|TypeError|RangeError|\bError:/;

describe("errorLine: one line, masq: <what> (<setting or object>): <what to do>", () => {
  const cases: [name: string, err: unknown, line: string, code: number][] = [
    [
      "a setting, as constructed everywhere",
      new ConfigError("QUEUE_URL", "is not set; give the queue's URL with --queue-url or QUEUE_URL"),
      "masq: invalid setting (QUEUE_URL): is not set; give the queue's URL with --queue-url or QUEUE_URL",
      2,
    ],
    [
      "a setting with words of its own",
      new ConfigError("MASQ_HTTP_PORT", "port 8717 on 0.0.0.0 is in use", { what: "cannot start the HTTP listener", hint: "choose another port" }),
      "masq: cannot start the HTTP listener (MASQ_HTTP_PORT): port 8717 on 0.0.0.0 is in use; choose another port",
      2,
    ],
    ["a fatal error with only a message", new FatalError("table public.x has no column user_id"), "masq: table public.x has no column user_id", 1],
    [
      "a fatal error with help",
      new FatalError("x", { what: "Postgres refused: permission denied for table vault", object: "DATABASE_URL at h:5432/db", hint: "grant it" }),
      "masq: Postgres refused: permission denied for table vault (DATABASE_URL at h:5432/db): grant it",
      1,
    ],
    ["a transient error", new TransientError("Postgres unreachable: boom", "pg", { what: "cannot reach Postgres", object: "DATABASE_URL at h:1/db", hint: "connect ECONNREFUSED" }), "masq: cannot reach Postgres (DATABASE_URL at h:1/db): connect ECONNREFUSED", 1],
    ["given up", new UnreachableError("x", { what: "cannot reach Postgres within 30 s", object: "DATABASE_URL at h:1/db", hint: "h" }), "masq: cannot reach Postgres within 30 s (DATABASE_URL at h:1/db): h", 1],
    ["interrupted by SIGINT", new InterruptedError("x", "SIGINT", { what: "interrupted while connecting to Postgres", object: "DATABASE_URL at h:1/db", hint: "nothing was done" }), "masq: interrupted while connecting to Postgres (DATABASE_URL at h:1/db): nothing was done", 130],
    ["interrupted by SIGTERM", new InterruptedError("x", "SIGTERM"), "masq: x", 143],
    ["rows refused", new DataError("Postgres rejected the rows: value too long (SQLSTATE 22001)", "22001"), "masq: Postgres rejected the rows: value too long (SQLSTATE 22001)", 1],
    ["an error of a library", Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }), "masq: unexpected failure: connect ECONNREFUSED 127.0.0.1:1", 1],
    ["an empty Error", new TypeError(""), "masq: unexpected failure: no details were given", 1],
  ];
  for (const [name, err, line, code] of cases) {
    test(name, () => {
      assert.equal(errorLine(err), line);
      assert.equal(exitCodeFor(err), code);
    });
  }

  for (const thrown of [undefined, null, 42, "text", { message: "an object" }]) {
    test(`a thrown ${JSON.stringify(thrown) ?? "undefined"} prints words, never "undefined" or a class name`, () => {
      const line = errorLine(thrown);
      assert.match(line, /^masq: unexpected failure/);
      assert.ok(!/undefined|null/.test(line), line);
      assert.ok(!CLASS_NAMES.test(line), line);
      assert.equal(exitCodeFor(thrown), 1);
    });
  }

  test("a message with line breaks stays one line", () => {
    assert.equal(errorLine(new FatalError("a\nb\r\n  c")), "masq: a b c");
  });
});
