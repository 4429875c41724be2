import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { TEST_KEY, TEST_MASTER_KEY_HEX } from "./pipeline.ts";
import { TEST_CREDENTIALS } from "./sqs.ts";

export const MASQ_BIN = fileURLToPath(new URL("../../bin/masq", import.meta.url));

export interface MasqProcess {
  child: ChildProcess;
  /** stdout and stderr lines so far (stdout is JSON logs). */
  lines: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Environment for a masq child talking to the test's SQS server and database. */
export function masqEnv(opts: { queueUrl: string; sqsEndpoint: string; databaseUrl: string; extra?: Record<string, string> }): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    QUEUE_URL: opts.queueUrl,
    AWS_ENDPOINT_URL_SQS: opts.sqsEndpoint,
    AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
    AWS_REGION: "us-east-1",
    DATABASE_URL: opts.databaseUrl,
    MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX,
    // The tests' known pseudonym key, given explicitly, so expected pseudonyms can be computed in the test.
    MASQ_PSEUDONYM_KEY: Buffer.from(TEST_KEY).toString("hex"),
    MASQ_LOG_LEVEL: "info",
    // Several masq processes run at once in some tests: each takes a free port for /metrics rather than the default port.
    MASQ_HTTP_PORT: "0",
    ...opts.extra,
  };
}

export function spawnMasq(args: string[], env: NodeJS.ProcessEnv): MasqProcess {
  const child = spawn(process.execPath, [MASQ_BIN, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  const collect = (chunk: Buffer) => lines.push(...chunk.toString().split("\n").filter(Boolean));
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("exit", (code, signal) => resolve({ code, signal }));
  });
  return { child, lines, exited };
}
