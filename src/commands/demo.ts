/**
 * The commands that need nothing installed: `masq demo`, the whole pipeline against servers of its own, and `masq
 * local-queue`, an SQS-compatible server with one queue for `masq run` to drain.
 */
import path from "node:path";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync, createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { createDb } from "../db/pool.ts";
import { prepareDatabase } from "../db/prepare-database.ts";
import { ConfigError } from "../errors.ts";
import { totalQuarantined } from "../ingest/observer.ts";
import { parseMasterKey } from "../ingest/pseudonymize.ts";
import { Runner } from "../ingest/runner.ts";
import { createSqsClient } from "../ingest/sqs-client.ts";
import { SqsSource } from "../ingest/sqs-source.ts";
import { LocalKeyProvider } from "../keys/key-provider.ts";
import { IngestKeys } from "../keys/ingest-keys.ts";
import { createLogger } from "../log.ts";
import { startEmbeddedPostgres, startEmbeddedSqs, sendBodies, summarize } from "../ops/demo.ts";
import { generateEvents } from "../ops/synthetic-events.ts";
import { createProgress } from "../ops/progress.ts";
import { readLogFormat, readPipelineConfig, settingSources } from "../settings/config.ts";

const TABLE = { schema: "public", name: "user_logins" };
/** fauxqs accepts any credentials; these keep the SDK (here and in `masq run`) from looking for real ones. */
const LOCAL_CREDENTIALS = { accessKeyId: "local", secretAccessKey: "local" };

/**
 * `masq demo` (npm start): an SQS server in this process, an embedded Postgres, a throwaway master key for the
 * local key provider, synthetic events, one drain, and a summary. Needs no configuration and leaves nothing behind
 * unless --keep, which keeps the database and the master key (in .masq-demo/) so that `masq unmask` can be tried.
 */
export async function demoCommand(opts: { messages: number; keep?: boolean; seed: number; config?: string }): Promise<number> {
  const src = settingSources(opts.config === undefined ? {} : { config: opts.config }, process.env);
  const out = (line = "") => process.stdout.write(`${line}\n`);
  const warn = (line: string) => process.stderr.write(`${line}\n`);
  warn("WARNING: masq demo uses a master key generated for the demo (local key provider). Never use demo data or keys in production.");
  const demoDir = path.resolve(".masq-demo");
  const masterKeyFile = path.join(demoDir, "master.key");
  const masterKey = opts.keep ? keptMasterKey(masterKeyFile) : new Uint8Array(randomBytes(32));

  out("Starting an embedded Postgres and an in-process SQS server…");
  const pg = await startEmbeddedPostgres(opts.keep ? { dir: path.join(demoDir, "postgres"), keepData: true } : {});
  if (pg.relocated) warn(`masq: ${pg.relocated}`);
  const sqsServer = await startEmbeddedSqs();
  const queueUrl = sqsServer.createQueue("login-queue", { VisibilityTimeout: "30" });
  const sqs = createSqsClient({ region: "us-east-1", endpoint: sqsServer.endpoint, credentials: LOCAL_CREDENTIALS });
  const db = createDb({ databaseUrl: pg.url, poolSize: 6 });
  const logger = createLogger("warn", process.stderr, readLogFormat(src));
  const provider = new LocalKeyProvider(masterKey);
  let keys: IngestKeys | undefined;
  try {
    await prepareDatabase(db, TABLE, { migrate: true, logger });
    keys = await IngestKeys.open({ pool: db.pool, provider });
    const events = generateEvents(opts.messages, { seed: opts.seed });
    out(`Sending ${opts.messages.toLocaleString("en-US")} synthetic login events (about 5% malformed)…`);
    await sendBodies(sqs, queueUrl, events.map((e) => e.body));

    const config = readPipelineConfig(src, true);
    out("Draining the queue through masq…");
    const source = new SqsSource(sqs, queueUrl);
    // Every event was sent before the drain: the queue holds exactly that many.
    const progress = createProgress("draining", { total: events.length });
    const runner = new Runner({
      source,
      pool: db.pool,
      table: TABLE,
      keys,
      logger,
      config,
      observer: progress,
    });
    const started = performance.now();
    const result = await runner.run({ drain: true });
    const seconds = (performance.now() - started) / 1000;
    progress?.stop({ complete: !result.fatal && !result.timedOut });
    const s = result.stats;
    const summary = await summarize(db, TABLE);

    out();
    out("masq demo summary");
    out(`  received     ${s.received.toLocaleString("en-US")}`);
    out(`  written      ${s.written.toLocaleString("en-US")} rows (table user_logins now holds ${summary.rows.toLocaleString("en-US")})`);
    out(`  quarantined  ${totalQuarantined(s).toLocaleString("en-US")}`);
    for (const q of summary.quarantineByReason) out(`    ${q.reason.padEnd(22)} ${q.count}`);
    out(`  vault        ${summary.vault.ip.toLocaleString("en-US")} distinct ips and ${summary.vault.deviceId.toLocaleString("en-US")} device ids, encrypted under ${summary.vault.dataKeys} data key(s)`);
    out(`  throughput   ${Math.round(s.received / seconds).toLocaleString("en-US")} messages/s (${seconds.toFixed(1)} s end to end)`);
    out();
    out("Largest duplicate groups by masked_device_id (same device, many logins):");
    for (const g of summary.topDevices) out(`  ${g.pseudonym}  ${g.count}`);
    out("Largest duplicate groups by masked_ip:");
    for (const g of summary.topIps) out(`  ${g.pseudonym}  ${g.count}`);
    if (opts.keep) {
      out();
      out(`Embedded Postgres is still running. Connect with:\n  psql ${pg.url}`);
      out(`  e.g. SELECT masq.app_version_text(app_version), count(*) FROM user_logins GROUP BY 1 ORDER BY 2 DESC;`);
      out(`Recover an original value (audited in masq.unmask_audit), in another terminal:`);
      out(`  DATABASE_URL=${pg.url} MASQ_MASTER_KEY_FILE=${masterKeyFile} \\`);
      out(`    bin/masq unmask --reason "trying the demo" --pseudonym ${summary.topDevices[0]?.pseudonym ?? "<pseudonym>"}`);
      out(`Press Ctrl-C to stop it (its data stays in ${pg.dir}).`);
      await new Promise<void>((resolve) => {
        process.once("SIGINT", resolve);
        process.once("SIGTERM", resolve);
      });
    }
    return result.fatal || result.timedOut ? 1 : 0;
  } finally {
    keys?.close();
    provider.close();
    sqs.destroy();
    await db.close();
    await sqsServer.stop();
    await pg.stop();
  }
}

/** With --keep, the master key lives beside the kept database (0600), so a later demo run or `masq unmask` can use it. */
function keptMasterKey(file: string): Uint8Array {
  if (existsSync(file)) return parseMasterKey(readFileSync(file, "utf8"), file);
  mkdirSync(path.dirname(file), { recursive: true });
  const key = randomBytes(32);
  writeFileSync(file, `${key.toString("hex")}\n`, { mode: 0o600 });
  return new Uint8Array(key);
}

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
