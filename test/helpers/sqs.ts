import { randomBytes } from "node:crypto";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { startEmbeddedSqs, type EmbeddedSqs } from "../../src/ops/demo.ts";
import { createSqsClient } from "../../src/ingest/sqs-client.ts";

export const TEST_CREDENTIALS = { accessKeyId: "test", secretAccessKey: "test" };

export interface TestSqs {
  server: EmbeddedSqs;
  endpoint: string;
  client: SQSClient;
  newQueue(attributes?: Record<string, string>): string;
  clientFor(endpoint: string): SQSClient;
  close(): Promise<void>;
}

/** fauxqs in this process: a real SQS-compatible server speaking the AWS JSON protocol over HTTP. */
export async function startTestSqs(): Promise<TestSqs> {
  const server = await startEmbeddedSqs();
  const clientFor = (endpoint: string) => createSqsClient({ region: "us-east-1", endpoint, credentials: TEST_CREDENTIALS, requestTimeoutMs: 10_000 });
  const client = clientFor(server.endpoint);
  return {
    server,
    endpoint: server.endpoint,
    client,
    clientFor,
    newQueue: (attributes) => server.createQueue(`q-${randomBytes(4).toString("hex")}`, attributes),
    async close() {
      client.destroy();
      await server.stop();
    },
  };
}
