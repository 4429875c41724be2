import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { readLogFormat, readPipelineConfig } from "../settings/config.ts";
import { generateEvents } from "../demo/synthetic.ts";
import { startEmbeddedPostgres, startEmbeddedSqs } from "../demo/embedded.ts";
import { sendBodies } from "../demo/send-events.ts";
import { summarize } from "../demo/summary.ts";
import { createLogger } from "../log.ts";
import { parseMasterKey } from "../ingest/pseudonym-key.ts";
import { IngestKeys } from "../ingest/ingest-keys.ts";
import { LocalKeyProvider } from "../vault/local-provider.ts";
import { Runner } from "../ingest/runner.ts";
import { totalQuarantined } from "../ingest/observer.ts";
import { createDb } from "../sink/db.ts";
import { createSqsClient } from "../source/sqs-client.ts";
import { SqsSource } from "../source/sqs-source.ts";
import { prepareDatabase } from "../db/prepare-database.ts";
import { createProgress } from "../progress/progress.ts";

const TABLE = { schema: "public", name: "user_logins" };
/** The in-process SQS server accepts any credentials; these keep the SDK from looking for real ones. */
const DEMO_CREDENTIALS = { accessKeyId: "demo", secretAccessKey: "demo" };

/**
 * `masq demo` (npm start): an SQS server in this process, an embedded Postgres, a throwaway master key for the
 * local key provider, synthetic events, one drain, and a summary. Needs no configuration and leaves nothing behind
 * unless --keep, which keeps the database and the master key (in .masq-demo/) so that `masq unmask` can be tried.
 */
export async function demoCommand(opts: { messages: number; keep?: boolean; seed: number }): Promise<number> {
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
  const sqs = createSqsClient({ region: "us-east-1", endpoint: sqsServer.endpoint, credentials: DEMO_CREDENTIALS });
  const db = createDb({ databaseUrl: pg.url, poolSize: 6 });
  const logger = createLogger("warn", process.stderr, readLogFormat(process.env));
  const provider = new LocalKeyProvider(masterKey);
  let keys: IngestKeys | undefined;
  try {
    await prepareDatabase(db, TABLE, { migrate: true, logger });
    keys = await IngestKeys.open({ pool: db.pool, provider });
    const events = generateEvents(opts.messages, { seed: opts.seed });
    out(`Sending ${opts.messages.toLocaleString("en-US")} synthetic login events (about 5% malformed)…`);
    await sendBodies(sqs, queueUrl, events.map((e) => e.body));

    const config = readPipelineConfig({}, process.env, true);
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
