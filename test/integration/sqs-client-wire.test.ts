import assert from "node:assert/strict";
import { createServer, request, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { SendMessageCommand } from "@aws-sdk/client-sqs";
import { USER_AGENT } from "../../src/ingest/sqs-client.ts";
import { SqsSource } from "../../src/ingest/sqs-source.ts";
import { startTestSqs, type TestSqs } from "../helpers/sqs.ts";

/**
 * masq's SQS client caches the SDK's middleware chain, keeps one signer per client and passes abort signals through
 * its request handler (sqs-client.ts): what reaches the wire must still be what AWS expects. fauxqs behind a proxy
 * that records each request's headers and answers with a server clock an hour ahead.
 */
const SKEW_MS = 3_600_000;

describe("masq's SQS client on the wire (fauxqs behind a proxy whose clock is an hour ahead)", () => {
  let sqs: TestSqs;
  let proxy: Server;
  let proxyEndpoint: string;
  const seen: IncomingHttpHeaders[] = [];

  before(async () => {
    sqs = await startTestSqs();
    const upstream = new URL(sqs.endpoint);
    proxy = createServer((req, res) => {
      seen.push(req.headers);
      const out = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
        res.writeHead(up.statusCode ?? 502, { ...up.headers, date: new Date(Date.now() + SKEW_MS).toUTCString() });
        up.pipe(res);
      });
      out.on("error", () => res.destroy());
      // A client that goes away takes its upstream request with it, as it would on a direct connection.
      res.on("close", () => out.destroy());
      req.pipe(out);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    proxyEndpoint = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  });

  after(async () => {
    proxy.closeAllConnections();
    await new Promise((resolve) => proxy.close(resolve));
    await sqs.close();
  });

  test("requests carry masq's user agent, and the signing clock follows the server's (clock-skew correction)", async () => {
    const client = sqs.clientFor(proxyEndpoint);
    const source = new SqsSource(client, sqs.newQueue());
    seen.length = 0;
    await source.counts();
    // Calls at once go on lanes of their own (sqs-client.ts): the ones made now have not heard the server yet.
    await Promise.all([source.counts(), source.counts(), source.receiveBatch({ waitTimeSeconds: 0, visibilityTimeoutSeconds: 30 })]);
    const dates = seen.map((h) => Date.parse(String(h["x-amz-date"]).replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, "$1-$2-$3T$4:$5:$6Z")));
    assert.equal(seen.length, 4);
    assert.ok(Math.abs(dates[0]! - Date.now()) < SKEW_MS / 2, "the first request is signed with the local clock");
    for (const d of dates.slice(1)) assert.ok(Math.abs(d - (Date.now() + SKEW_MS)) < SKEW_MS / 2, "later requests are signed with the server's clock");
    for (const h of seen) assert.equal(h["user-agent"], USER_AGENT);
    client.destroy();
  });

  test("a receive's signal cuts its long poll short; the next receive on the same source gets the message", async () => {
    const client = sqs.clientFor(proxyEndpoint);
    const queueUrl = sqs.newQueue();
    const source = new SqsSource(client, queueUrl);
    const abort = new AbortController();
    seen.length = 0;
    // Visibility 0: should the server still hand the aborted poll a message, it is visible again at once.
    const poll = source.receiveBatch({ waitTimeSeconds: 20, visibilityTimeoutSeconds: 0, signal: abort.signal });
    while (seen.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    abort.abort();
    // Unaborted, an empty queue's long poll resolves with no messages after 20 s (past the test's own wait below).
    await assert.rejects(poll);
    await sqs.client.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: "after the abort" }));
    const got = await source.receiveBatch({ waitTimeSeconds: 5, visibilityTimeoutSeconds: 30 });
    assert.deepEqual(got.map((m) => m.body), ["after the abort"]);
    client.destroy();
  });
});
