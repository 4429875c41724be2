import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { describe, test } from "node:test";
import { bodyChecksumNeeded, createSqsClient } from "../../src/ingest/sqs-client.ts";

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

describe("SigV4 as masq's client signs (one signer per client, node:crypto with KeyObjects)", () => {
  const credentials = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" };
  const sha256 = (data: string) => createHash("sha256").update(data).digest("hex");
  const hmac = (key: string | Buffer, data: string) => createHmac("sha256", key).update(data).digest();

  /** The signature by the algorithm as AWS documents it, computed here without the SDK. */
  function expectedSignature(body: string, amzDate: string, region: string, signedHeaders: [string, string][]): string {
    const day = amzDate.slice(0, 8);
    const canonical = ["POST", "/", "", ...signedHeaders.map(([k, v]) => `${k}:${v}`), "", signedHeaders.map(([k]) => k).join(";"), sha256(body)].join("\n");
    const scope = `${day}/${region}/sqs/aws4_request`;
    const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256(canonical)].join("\n");
    let key = hmac(`AWS4${credentials.secretAccessKey}`, day);
    for (const part of [region, "sqs", "aws4_request"]) key = hmac(key, part);
    return createHmac("sha256", key).update(toSign).digest("hex");
  }

  test("the signature is the documented algorithm's, call after call and across days", async () => {
    const client = createSqsClient({ region: "eu-west-1", credentials });
    const body = '{"QueueUrl":"https://sqs.eu-west-1.amazonaws.com/123456789012/logins","MaxNumberOfMessages":10}';
    for (const iso of ["2026-12-06T12:00:00Z", "2026-12-06T12:00:01Z", "2026-12-07T00:00:00Z"]) {
      const request = {
        method: "POST",
        protocol: "https:",
        hostname: "sqs.eu-west-1.amazonaws.com",
        path: "/",
        query: {},
        headers: { host: "sqs.eu-west-1.amazonaws.com", "content-type": "application/x-amz-json-1.0", "x-amz-target": "AmazonSQS.ReceiveMessage" },
        body,
      };
      const signer = await client.config.signer();
      const signed = (await signer.sign(request, { signingDate: new Date(iso), signingRegion: "eu-west-1", signingService: "sqs" })) as unknown as { headers: Record<string, string> };
      const amzDate = signed.headers["x-amz-date"]!;
      const headers: [string, string][] = [
        ["content-type", "application/x-amz-json-1.0"],
        ["host", "sqs.eu-west-1.amazonaws.com"],
        ["x-amz-content-sha256", sha256(body)],
        ["x-amz-date", amzDate],
        ["x-amz-target", "AmazonSQS.ReceiveMessage"],
      ];
      const signature = /Signature=([0-9a-f]{64})$/.exec(signed.headers.authorization ?? "")?.[1];
      assert.equal(signature, expectedSignature(body, amzDate, "eu-west-1", headers), iso);
    }
    client.destroy();
  });
});
