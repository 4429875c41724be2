import assert from "node:assert/strict";
import { test } from "node:test";
import { deserialize, serialize } from "node:v8";
import { ConfigError, errorLine, exitCodeFor, FatalError, TransientError } from "../../src/errors.ts";
import { fromErrorData, toErrorData } from "../../src/ingest/sqs-thread-protocol.ts";
import { classifySqsError } from "../../src/ingest/sqs-errors.ts";

const QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/logins";

/** What postMessage does to a value: the structured clone, as node:v8 serializes it. */
const acrossThreads = <T>(v: T): T => deserialize(serialize(v)) as T;

test("an error classified on the SQS thread is the same class, line and exit code on the main thread", () => {
  const cases: unknown[] = [
    classifySqsError({ name: "QueueDoesNotExist", message: "The specified queue does not exist.", $metadata: { httpStatusCode: 400 } }, "ReceiveMessage", QUEUE),
    classifySqsError({ name: "AccessDenied", message: "no", $metadata: { httpStatusCode: 403 } }, "DeleteMessageBatch", QUEUE),
    classifySqsError({ name: "ThrottlingException", message: "slow down", $metadata: { httpStatusCode: 400 } }, "ReceiveMessage", QUEUE),
    classifySqsError({ name: "CredentialsProviderError", message: "Could not load credentials from any providers" }, "ReceiveMessage", QUEUE),
    classifySqsError(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:4566"), { code: "ECONNREFUSED" }), "ReceiveMessage", QUEUE),
    new ConfigError("MASQ_SQS_PROTOCOL", "is json, but the SQS endpoint does not speak it", { hint: "set it to query" }),
  ];
  for (const err of cases) {
    const back = fromErrorData(acrossThreads(toErrorData(err)));
    assert.equal(back.constructor, (err as Error).constructor, String(err));
    assert.equal(back.message, (err as Error).message);
    assert.equal(errorLine(back), errorLine(err));
    assert.equal(exitCodeFor(back), exitCodeFor(err));
    if (err instanceof TransientError) assert.equal((back as TransientError).cause_, err.cause_);
    if (err instanceof ConfigError) assert.deepEqual([(back as ConfigError).setting, (back as ConfigError).help], [err.setting, err.help]);
  }
});

test("anything else the thread throws is a bug: fatal, named as unexpected", () => {
  const back = fromErrorData(acrossThreads(toErrorData(new TypeError("x is not a function"))));
  assert.ok(back instanceof FatalError);
  assert.match(back.message, /^unexpected error in the SQS thread: TypeError: x is not a function$/);
  assert.equal(exitCodeFor(back), 1);
});
