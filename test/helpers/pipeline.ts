import { Writable } from "node:stream";
import type { SQSClient } from "@aws-sdk/client-sqs";
import type { PipelineConfig } from "../../src/settings/config.ts";
import { generateEvents, type SyntheticEvent } from "../../src/ops/synthetic-events.ts";
import { createLogger, type Logger } from "../../src/log.ts";
import { IngestKeys } from "../../src/keys/ingest-keys.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { Runner } from "../../src/ingest/runner.ts";
import type { ProgressLogTiming } from "../../src/ingest/observer.ts";
import type { BatchPreparer } from "../../src/ingest/commit-batch.ts";
import { createDb, type Db } from "../../src/db/pool.ts";
import { SqsSource } from "../../src/ingest/sqs-source.ts";
import type { TableName } from "../../src/db/tables.ts";

export const TEST_KEY = new Uint8Array(32).map((_, i) => i);
/** The local provider's master key in tests (hex: 20 21 … 3f). */
export const TEST_MASTER_KEY = new Uint8Array(32).map((_, i) => 0x20 + i);
export const TEST_MASTER_KEY_HEX = Buffer.from(TEST_MASTER_KEY).toString("hex");

/** Ingestion's keys as the tests use them: the local provider, and TEST_KEY given as the pseudonym key. */
export function testKeys(db: Db, opts: { pseudonymKey?: Uint8Array | null } = {}): Promise<IngestKeys> {
  const override = opts.pseudonymKey === null ? undefined : (opts.pseudonymKey ?? TEST_KEY);
  return IngestKeys.open({ pool: db.pool, provider: new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY)), pseudonymKeyOverride: override });
}
export const TABLE: TableName = { schema: "public", name: "user_logins" };

export const FAST: PipelineConfig = {
  batchSize: 200,
  batchWaitMs: 100,
  receivers: 4,
  maxInFlight: 2000,
  maxInFlightBytes: 32 * 1024 * 1024,
  writers: 2,
  waitTimeSeconds: 1,
  visibilityTimeoutSeconds: 10,
  shutdownTimeoutMs: 15_000,
};

/** Synthetic events whose valid ones carry a unique user_id (u-0, u-1, …), so exactly-once can be checked per message. */
export function uniqueEvents(count: number, seed = 7, malformedRate = 0.05): SyntheticEvent[] {
  return generateEvents(count, { seed, malformedRate }).map((e, i) => {
    if (e.expectedReason !== null) return e;
    const obj = JSON.parse(e.body) as Record<string, unknown>;
    return { ...e, body: JSON.stringify({ ...obj, user_id: `u-${i}` }) };
  });
}

export function expectedCounts(events: SyntheticEvent[]): { valid: number; byReason: Record<string, number> } {
  const byReason: Record<string, number> = {};
  let valid = 0;
  for (const e of events) {
    if (e.expectedReason === null) valid++;
    else byReason[e.expectedReason] = (byReason[e.expectedReason] ?? 0) + 1;
  }
  return { valid, byReason };
}

/** A logger whose lines are kept, to assert on what masq logs. */
export function captureLogger(level: "debug" | "info" = "debug"): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split("\n").filter(Boolean));
      cb();
    },
  });
  return { logger: createLogger(level, sink), lines };
}

export async function makeRunner(opts: {
  db: Db;
  sqs: SQSClient;
  queueUrl: string;
  logger?: Logger;
  config?: Partial<PipelineConfig>;
  source?: SqsSource;
  keys?: IngestKeys;
  /** Prepare threads (ingest/prepare-threads.ts) instead of preparing on this thread. */
  preparer?: BatchPreparer;
  progressLog?: ProgressLogTiming;
}): Promise<Runner> {
  return new Runner({
    source: opts.source ?? new SqsSource(opts.sqs, opts.queueUrl),
    pool: opts.db.pool,
    table: TABLE,
    keys: opts.keys ?? (await testKeys(opts.db)),
    logger: opts.logger ?? createLogger("silent"),
    config: { ...FAST, ...opts.config },
    preparer: opts.preparer,
    progressLog: opts.progressLog,
  });
}

export interface TableCounts {
  rows: number;
  distinctUsers: number;
  ledger: number;
  quarantine: Record<string, number>;
}

export async function tableCounts(db: Db): Promise<TableCounts> {
  const r = await db.pool.query<{ rows: number; users: number }>("SELECT count(*)::int AS rows, count(DISTINCT user_id)::int AS users FROM public.user_logins");
  const l = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.ingest_ledger");
  const q = await db.pool.query<{ reason: string; n: number }>("SELECT reason, count(*)::int AS n FROM masq.quarantine GROUP BY reason");
  return {
    rows: r.rows[0]!.rows,
    distinctUsers: r.rows[0]!.users,
    ledger: l.rows[0]!.n,
    quarantine: Object.fromEntries(q.rows.map((x) => [x.reason, x.n])),
  };
}

export { createDb };

export async function waitFor(cond: () => Promise<boolean> | boolean, timeoutMs = 60_000, what = "condition"): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
