import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { bodyChecksumNeeded, createSqsClient } from "../../src/source/sqs-client.ts";

describe("bodyChecksumNeeded: ReceiveMessage's MD5 check only where the transport does not already protect the bodies", () => {
  const cases: [endpoint: string | undefined, queueUrl: string | undefined, needed: boolean][] = [
    // AWS: no endpoint, the queue's https URL.
    [undefined, "https://sqs.eu-west-1.amazonaws.com/123456789012/logins", false],
    ["https://sqs.internal.example:8443", "http://sqs.internal.example/000000000000/q", false],
    ["http://127.0.0.1:4566", "http://sqs.us-east-1.localhost.localstack.cloud:4566/000000000000/q", false],
    ["http://localhost:9324", undefined, false],
    ["http://[::1]:9324", undefined, false],
    // Plain HTTP to another host: a proxy or a flaky link may change bytes, the MD5 is the only check.
    ["http://localstack:4566", undefined, true],
    [undefined, "http://sqs.example.internal/000000000000/q", true],
    ["http://127.0.0.1.example.com", undefined, true],
    // Nothing known about where requests go: keep it.
    [undefined, undefined, true],
    ["not a url", undefined, true],
  ];
  for (const [endpoint, queueUrl, needed] of cases) {
    test(`${endpoint ?? "-"} / ${queueUrl ?? "-"} -> ${needed ? "check" : "no check"}`, () => assert.equal(bodyChecksumNeeded(endpoint, queueUrl), needed));
  }

  test("the client is built accordingly", () => {
    const aws = createSqsClient({ region: "eu-west-1", queueUrl: "https://sqs.eu-west-1.amazonaws.com/123456789012/logins" });
    const plain = createSqsClient({ region: "eu-west-1", endpoint: "http://localstack:4566" });
    assert.equal(aws.config.md5, false);
    assert.equal(typeof plain.config.md5, "function");
    aws.destroy();
    plain.destroy();
  });
});
