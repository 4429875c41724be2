import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { classifySqsError } from "../../src/ingest/sqs-errors.ts";

/** SDK errors as they arrive (name, Code, status), and what masq must make of them: never retry a mistake. */
function sdkError(name: string, message: string, status?: number): Error {
  const e = new Error(message) as Error & { Code?: string; $metadata?: { httpStatusCode?: number } };
  e.name = name;
  if (status !== undefined) e.$metadata = { httpStatusCode: status };
  return e;
}

const QUEUE = "http://localhost:4566/000000000000/login-queue";

describe("classifySqsError", () => {
  const cases: [what: string, err: Error, cls: string, text: RegExp][] = [
    ["no credentials anywhere", sdkError("CredentialsProviderError", "Could not load credentials from any providers"), "ConfigError", /^AWS_ACCESS_KEY_ID\/AWS_PROFILE: no AWS credentials/],
    ["a profile that does not exist", sdkError("CredentialsProviderError", "Could not resolve credentials using profile: [nope] in configuration/credential file(s)."), "ConfigError", /^AWS_PROFILE: .*\[nope\]/],
    ["a key id AWS does not know", sdkError("InvalidClientTokenId", "The security token included in the request is invalid.", 403), "ConfigError", /^AWS_ACCESS_KEY_ID\/AWS_SECRET_ACCESS_KEY: SQS refused/],
    ["a wrong secret", sdkError("SignatureDoesNotMatch", "The request signature we calculated does not match", 403), "ConfigError", /AWS_SECRET_ACCESS_KEY/],
    ["an expired session token", sdkError("ExpiredToken", "The security token included in the request is expired", 403), "ConfigError", /^AWS_SESSION_TOKEN/],
    ["no such queue (JSON)", sdkError("QueueDoesNotExist", "The specified queue does not exist.", 400), "ConfigError", /^QUEUE_URL: no such queue: http:\/\/localhost:4566/],
    ["no such queue (Query)", sdkError("AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist for this wsdl version.", 400), "ConfigError", /^QUEUE_URL/],
    ["a region the SDK refuses", sdkError("Error", 'Region not accepted: region="bad region!" is not a valid hostname component.'), "ConfigError", /^AWS_REGION/],
    ["Query sent to a JSON-only endpoint", sdkError("InvalidAction", "Unknown action: GetQueueAttributes", 400), "ConfigError", /^MASQ_SQS_PROTOCOL/],
    ["JSON sent to LocalStack < 3 (500, Missing Action)", sdkError("InternalError", "Operation detection failed. Missing Action in request for query-protocol service", 500), "ConfigError", /^MASQ_SQS_PROTOCOL/],
    ["an XML body where JSON was expected, 4xx", sdkError("SyntaxError", "Unexpected token '<', \"<?xml vers\"... is not valid JSON", 400), "ConfigError", /^MASQ_SQS_PROTOCOL/],
    ["access denied", sdkError("AccessDenied", "User: arn:aws:iam::1:user/x is not authorized to perform: sqs:ReceiveMessage", 403), "FatalError", /access denied: grant the AWS identity sqs:ReceiveMessage/],
    ["another 4xx", sdkError("InvalidParameterValue", "Value 99 for parameter MaxNumberOfMessages is invalid", 400), "FatalError", /InvalidParameterValue/],
    ["throttling", sdkError("ThrottlingException", "Rate exceeded", 400), "TransientError", /Throttling/],
    ["a 5xx page a proxy could not parse", sdkError("SyntaxError", "Unexpected token '<', \"<html>\"... is not valid JSON", 502), "TransientError", /SyntaxError/],
    ["an internal error", sdkError("InternalError", "We encountered an internal error. Please try again.", 500), "TransientError", /InternalError/],
    ["connection refused", Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:4566"), { code: "ECONNREFUSED" }), "TransientError", /ECONNREFUSED/],
  ];
  for (const [what, err, cls, text] of cases) {
    test(`${what}: ${cls}`, () => {
      const got = classifySqsError(err, "ReceiveMessage", QUEUE);
      assert.equal(got.name, cls);
      assert.match(got.message, text);
    });
  }
});
