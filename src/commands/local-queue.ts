import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { ConfigError } from "../errors.ts";
import { startEmbeddedSqs } from "../demo/embedded.ts";
import { sendBodies } from "../demo/send-events.ts";
import { generateEvents } from "../demo/synthetic.ts";
import { createSqsClient } from "../source/sqs-client.ts";

/** fauxqs accepts any credentials; these keep the SDK (here and in `masq run`) from looking for real ones. */
const LOCAL_CREDENTIALS = { accessKeyId: "local", secretAccessKey: "local" };
/** Lines sent per round: a file of any size is loaded in bounded memory. */
const CHUNK = 1_000;

export interface LocalQueueOptions {
  port: number;
  queueName: string;
  events?: string;
  synthetic?: number;
  seed: number;
}

/**
 * `masq local-queue`: an SQS-compatible server (fauxqs) in this process, on a free port unless --port, with one
 * queue, loaded from a JSON-lines file (one message body per line) or the demo's synthetic generator. Prints the
 * environment that points `masq run` at it (stdout, one `export` per line), then serves until SIGINT/SIGTERM.
 * No Docker, no LocalStack, nothing to install.
 */
export async function localQueueCommand(opts: LocalQueueOptions): Promise<number> {
  if (opts.events !== undefined && opts.synthetic !== undefined) throw new ConfigError("--events", "and --synthetic cannot be combined; give one");
  let server;
  try {
    server = await startEmbeddedSqs({ port: opts.port });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") throw new ConfigError("--port", `${opts.port} is in use; choose another, or leave --port out for a free one`);
    throw err;
  }
  // fauxqs names queues by a virtual host (sqs.us-east-1.localhost) that may not resolve: the endpoint's address does.
  const queuePath = new URL(server.createQueue(opts.queueName)).pathname;
  const queueUrl = `${server.endpoint}${queuePath}`;
  const sqs = createSqsClient({ region: "us-east-1", endpoint: server.endpoint, credentials: LOCAL_CREDENTIALS });
  const note = (line: string) => process.stderr.write(`${line}\n`);
  try {
    let sent = 0;
    if (opts.synthetic !== undefined) {
      const events = generateEvents(opts.synthetic, { seed: opts.seed });
      for (let i = 0; i < events.length; i += CHUNK) await sendBodies(sqs, queueUrl, events.slice(i, i + CHUNK).map((e) => e.body));
      sent = events.length;
    } else if (opts.events !== undefined) {
      sent = await sendFile(opts.events, (bodies) => sendBodies(sqs, queueUrl, bodies));
    }
    const env = [
      `export QUEUE_URL=${queueUrl}`,
      `export AWS_ENDPOINT_URL_SQS=${server.endpoint}`,
      `export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=${LOCAL_CREDENTIALS.accessKeyId} AWS_SECRET_ACCESS_KEY=${LOCAL_CREDENTIALS.secretAccessKey}`,
    ];
    note(`masq: local SQS (fauxqs) at ${server.endpoint}: queue ${opts.queueName} holds ${sent.toLocaleString("en-US")} message(s)`);
    note("Point masq run at it from another shell (with DATABASE_URL and a master key set), e.g.:");
    process.stdout.write(`${env.join("\n")}\n`);
    note("  masq run --drain");
    note("Ctrl-C stops the server (its queue lives in memory and goes with it).");
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve);
      process.once("SIGTERM", resolve);
    });
    return 0;
  } finally {
    sqs.destroy();
    await server.stop();
  }
}

/** Non-empty lines of the file ("-": stdin), each one message body, sent CHUNK at a time. */
async function sendFile(file: string, send: (bodies: string[]) => Promise<void>): Promise<number> {
  const input = file === "-" ? process.stdin : createReadStream(file);
  const opened = new Promise<void>((resolve, reject) => {
    if (file === "-") return resolve();
    input.once("open", () => resolve());
    input.once("error", (err: NodeJS.ErrnoException) => reject(new ConfigError("--events", `cannot be read (${err.code ?? "error"})`)));
  });
  await opened;
  let chunk: string[] = [];
  let sent = 0;
  for await (const line of createInterface({ input, crlfDelay: Infinity })) {
    if (line.trim() === "") continue;
    chunk.push(line);
    if (chunk.length === CHUNK) {
      await send(chunk);
      sent += chunk.length;
      chunk = [];
    }
  }
  if (chunk.length > 0) await send(chunk);
  return sent + chunk.length;
}
