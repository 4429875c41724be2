import type { SQSClient } from "@aws-sdk/client-sqs";
import { loadMigrations } from "../db/migrate.ts";
import { createDb, sayWaiting, waitForPostgres } from "../db/pool.ts";
import { fromPostgres } from "../db/query.ts";
import { ConfigError, describeError, errorLine, exitCodeFor, FatalError, type ErrorHelp } from "../errors.ts";
import { createSqsClient, detectSqsProtocol } from "../ingest/sqs-client.ts";
import { SqsSource, type QueueCounts } from "../ingest/sqs-source.ts";
import { databaseStatus, type DatabaseStatus, type RowCount } from "../ops/status.ts";
import { databaseSetting, readConnectTimeoutMs, readDatabaseUrl, readQueueSettings, readRetentionDays, readTable, settingSources, type SqsProtocol, sqsTargetText } from "../settings/config.ts";

interface Status {
  queue: { url: string; protocol: SqsProtocol | null; counts: QueueCounts | null; error?: string } | null;
  database: (DatabaseStatus & { latestMigration: number }) | { error: string };
  table: string;
  /** MASQ_VAULT_RETENTION_DAYS, null when values are kept forever. */
  retentionDays: number | null;
}

/**
 * `masq status [--json]`: one screen from the queue's attributes and the database. Exit 1 if either is unreachable
 * (Postgres is waited for at most MASQ_CONNECT_TIMEOUT_SECONDS), 2 if a setting is wrong; each failure also ends
 * as one line on stderr naming the setting.
 */
export async function statusCommand(flags: Record<string, unknown>): Promise<number> {
  const src = settingSources(flags, process.env);
  const table = readTable(src);
  const queue = readQueueSettings(src);
  const connectTimeoutMs = readConnectTimeoutMs(src);
  const db = createDb({ databaseUrl: readDatabaseUrl(src), setting: databaseSetting(src), connectTimeoutMs, poolSize: 2 });
  const retentionDays = readRetentionDays(src) ?? null;
  const status: Status = { queue: null, database: { error: "not checked" }, table: `${table.schema}.${table.name}`, retentionDays };
  const failures: unknown[] = [];
  try {
    if (queue !== undefined) status.queue = await queueStatus(queue, { where: sqsTargetText(src), timeoutMs: connectTimeoutMs, failures });
    try {
      await waitForPostgres(db, { deadlineMs: connectTimeoutMs, onWait: sayWaiting });
      status.database = { ...(await databaseStatus(db, table)), latestMigration: loadMigrations().at(-1)?.version ?? 0 };
    } catch (err) {
      const missing = (err as { code?: string }).code === "42P01";
      const failure = fromPostgres(err, db.target);
      if (!missing) failures.push(failure);
      status.database = { error: missing ? "masq's tables are not there yet: run masq migrate (or masq run)" : errorLine(failure).replace(/^masq: /, "") };
    }
  } finally {
    await db.close().catch(() => undefined);
  }
  process.stdout.write(flags.json === true ? `${JSON.stringify(status, null, 2)}\n` : render(status));
  for (const f of failures) process.stderr.write(`${errorLine(f)}\n`);
  if (failures.length > 0) return Math.max(...failures.map(exitCodeFor));
  return "error" in status.database || status.queue?.error !== undefined ? 1 : 0;
}

/**
 * The queue's counts, in the protocol its endpoint speaks. A mistake in the settings (no credentials, no such queue,
 * a protocol the endpoint does not speak) is thrown: exit 2 with the setting named; anything else is reported.
 */
async function queueStatus(
  queue: NonNullable<ReturnType<typeof readQueueSettings>>,
  opts: { where: string; timeoutMs: number; failures: unknown[] },
): Promise<NonNullable<Status["queue"]>> {
  let protocol: SqsProtocol | null = null;
  let sqs: SQSClient | undefined;
  try {
    const signal = AbortSignal.timeout(opts.timeoutMs);
    protocol = await detectSqsProtocol({ queueUrl: queue.queueUrl, region: queue.region, endpoint: queue.endpoint, setting: queue.protocol, signal });
    sqs = createSqsClient({ region: queue.region, endpoint: queue.endpoint, protocol });
    return { url: queue.queueUrl, protocol, counts: await new SqsSource(sqs, queue.queueUrl).counts(signal) };
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    // Reported on the screen and, as the CLI's one line naming the setting and host:port, on stderr.
    const help: ErrorHelp = (err as { help?: ErrorHelp }).help ?? {};
    const failure = new FatalError(describeError(err), { what: "cannot read the queue", object: opts.where, ...help, hint: help.hint ?? (err as Error).message });
    opts.failures.push(failure);
    return { url: queue.queueUrl, protocol, counts: null, error: errorLine(failure).replace(/^masq: /, "") };
  } finally {
    sqs?.destroy();
  }
}

function render(s: Status): string {
  const n = (v: number) => v.toLocaleString("en-US");
  const lines: string[] = ["masq status"];
  if (s.queue === null) lines.push("  queue        not configured (set QUEUE_URL)");
  else if (s.queue.counts === null) lines.push(`  queue        ${s.queue.url}`, `    error: ${s.queue.error ?? "unknown error"}`);
  else {
    const c = s.queue.counts;
    lines.push(`  queue        ${s.queue.url}`, `    protocol     ${s.queue.protocol ?? "unknown"}`, `    visible      ${n(c.visible)}`, `    in flight    ${n(c.inFlight)}`, `    delayed      ${n(c.delayed)}`);
  }
  const d = s.database;
  if ("error" in d) lines.push(`  database     unreachable: ${d.error}`);
  else {
    const ago = d.lastCommitAt ? `${d.lastCommitAt.toISOString()} (${agoText(d.lastCommitAt)} ago)` : "never";
    const schema =
      d.schemaVersion === d.latestMigration
        ? `migration ${d.schemaVersion}, up to date`
        : d.schemaVersion > d.latestMigration
          ? // A newer masq migrated it: migrate cannot help (it refuses a newer database); this binary is the old one.
            `migration ${d.schemaVersion}, newer than this masq knows (${d.latestMigration}): upgrade masq`
          : `migration ${d.schemaVersion}, this masq ships ${d.latestMigration}: run masq migrate`;
    lines.push(
      `  database     schema at ${schema}`,
      `    ${s.table.padEnd(12)} ${countText(d.targetRows, "rows")}`,
      // A contract's tables (one per event type): rows by event type, as the tables hold them.
      ...d.otherTables.map((t) => `    ${t.table.padEnd(12)} ${countText(t.rows, "rows")}`),
      `    today (UTC)  ${n(d.committedToday.written)} written, ${n(d.committedToday.quarantined)} quarantined`,
      `    last commit  ${ago}`,
      `    ledger       ${countText(d.ledgerRows, "message ids")}`,
    );
    const v = d.vault;
    // A contract's kinds after the login's two, by name (none: the line as it always was).
    const others = v.byKind ? Object.keys(v.byKind).filter((k) => k !== "ip" && k !== "device_id").sort() : [];
    const kinds = v.byKind ? ` (${n(v.byKind.ip ?? 0)} ips, ${n(v.byKind.device_id ?? 0)} device ids${others.map((k) => `, ${n(v.byKind![k]!)} ${k}`).join("")})` : "";
    lines.push(
      `  vault        ${countText(v.values, "distinct values")}${kinds}, ${mib(v.bytes)} on disk`,
      `    keys         ${n(v.dataKeys)} data key(s) under ${v.masterKeys.length === 0 ? "no master key yet" : v.masterKeys.join(", ")}`,
      `    pseudonyms   ${v.pseudonymKey ? `key version ${v.pseudonymKey.version}${v.pseudonymKey.provider === "external" ? " (given in MASQ_PSEUDONYM_KEY)" : ""}` : "no key yet (created by the first masq run)"}`,
    );
    const retention = s.retentionDays === null ? "no retention period (MASQ_VAULT_RETENTION_DAYS unset)" : `retention ${n(s.retentionDays)} days`;
    lines.push(`    oldest value ${v.oldestValueAt ? `stored ${v.oldestValueAt.toISOString()} (${agoText(v.oldestValueAt)} ago)` : "none"}; ${retention}`);
    if (v.masterKeys.length > 1) lines.push("    note         more than one master key wraps masq's keys: finish the rotation with masq rotate master-key");
    if (v.retiringVersion !== null) lines.push(`    note         pseudonym key rotation in progress (replacing version ${v.retiringVersion}): masq rotate pseudonym-key --resume`);
    const total = d.quarantine.reduce((a, q) => a + q.total, 0);
    lines.push(`  quarantine   ${n(total)} waiting${total ? " (last 24 h in brackets)" : ""}`);
    for (const q of d.quarantine) lines.push(`    ${q.reason.padEnd(20)} ${n(q.total)} (${n(q.last24h)})`);
  }
  return `${lines.join("\n")}\n`;
}

/** "1,234 rows", "≈ 1,234 rows", or why there is no number: never an estimate that looks like a count. */
function countText(c: RowCount, unit: string): string {
  if (c.count === null) return `${unit}: unknown (never analysed, and this login may not count them; ANALYZE gives an estimate)`;
  const text = `${c.exact ? "" : "≈ "}${c.count.toLocaleString("en-US")} ${unit}`;
  return c.basis === "activity" ? `${text} (not analysed yet: from the server's insert and delete counts)` : text;
}

function mib(bytes: number): string {
  return bytes < 1024 * 1024 ? `${Math.ceil(bytes / 1024)} KiB` : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function agoText(at: Date): string {
  const s = Math.max(0, Math.round((Date.now() - at.getTime()) / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86_400)} days`;
}
