import { randomBytes } from "node:crypto";
import path from "node:path";
import { readPipelineConfig } from "../config.ts";
import { generateEvents } from "../demo/synthetic.ts";
import { startEmbeddedPostgres, startEmbeddedSqs } from "../demo/embedded.ts";
import { sendBodies } from "../demo/send-events.ts";
import { summarize } from "../demo/summary.ts";
import { createLogger } from "../log.ts";
import { createPseudonymizer } from "../mask/pseudonymize.ts";
import { Runner } from "../runner/runner.ts";
import { totalQuarantined } from "../runner/stats.ts";
import { createDb } from "../sink/db.ts";
import { createSqsClient } from "../source/sqs-client.ts";
import { SqsSource } from "../source/sqs-source.ts";
import { prepareDatabase } from "./setup.ts";
import { createProgress } from "../progress/progress.ts";

const TABLE = { schema: "public", name: "user_logins" };
/** The in-process SQS server accepts any credentials; these keep the SDK from looking for real ones. */
const DEMO_CREDENTIALS = { accessKeyId: "demo", secretAccessKey: "demo" };

/**
 * `masq demo` (npm start): an SQS server in this process, an embedded Postgres, a throwaway pseudonym key,
 * synthetic events, one drain, and a summary. Needs no configuration and leaves nothing behind unless --keep.
 */
export async function demoCommand(opts: { messages: number; keep?: boolean; seed: number }): Promise<number> {
  const out = (line = "") => process.stdout.write(`${line}\n`);
  const warn = (line: string) => process.stderr.write(`${line}\n`);
  warn("WARNING: masq demo uses a random pseudonym key generated for this run only. Never use demo data or keys in production.");

  out("Starting an embedded Postgres and an in-process SQS server…");
  const pg = await startEmbeddedPostgres(opts.keep ? { dir: path.resolve(".masq-demo"), keepData: true } : {});
  const sqsServer = await startEmbeddedSqs();
  const queueUrl = sqsServer.createQueue("login-queue", { VisibilityTimeout: "30" });
  const sqs = createSqsClient({ region: "us-east-1", endpoint: sqsServer.endpoint, credentials: DEMO_CREDENTIALS });
  const db = createDb({ databaseUrl: pg.url, poolSize: 6 });
  const logger = createLogger("warn", process.stderr);
  try {
    await prepareDatabase(db, TABLE, { migrate: true, logger });
    const events = generateEvents(opts.messages, { seed: opts.seed });
    out(`Sending ${opts.messages.toLocaleString("en-US")} synthetic login events (about 5% malformed)…`);
    await sendBodies(sqs, queueUrl, events.map((e) => e.body));

    const config = readPipelineConfig({}, process.env, true);
    out("Draining the queue through masq…");
    const source = new SqsSource(sqs, queueUrl);
    const progress = createProgress("draining");
    progress?.setBacklog(events.length);
    const poll = progress ? setInterval(() => void source.counts().then((c) => progress.setBacklog(c.visible), () => undefined), 500) : undefined;
    const runner = new Runner({
      source,
      pool: db.pool,
      table: TABLE,
      pseudonymizer: createPseudonymizer(randomBytes(32)),
      logger,
      config,
      observer: progress,
    });
    const started = performance.now();
    const result = await runner.run({ drain: true });
    const seconds = (performance.now() - started) / 1000;
    clearInterval(poll);
    progress?.stop();
    const s = result.stats;
    const summary = await summarize(db, TABLE);

    out();
    out("masq demo summary");
    out(`  received     ${s.received.toLocaleString("en-US")}`);
    out(`  written      ${s.written.toLocaleString("en-US")} rows (table user_logins now holds ${summary.rows.toLocaleString("en-US")})`);
    out(`  quarantined  ${totalQuarantined(s).toLocaleString("en-US")}`);
    for (const q of summary.quarantineByReason) out(`    ${q.reason.padEnd(22)} ${q.count}`);
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
      out(`Press Ctrl-C to stop it (its data stays in ${pg.dir}).`);
      await new Promise<void>((resolve) => {
        process.once("SIGINT", resolve);
        process.once("SIGTERM", resolve);
      });
    }
    return result.fatal || result.timedOut ? 1 : 0;
  } finally {
    sqs.destroy();
    await db.close();
    await sqsServer.stop();
    await pg.stop();
  }
}
