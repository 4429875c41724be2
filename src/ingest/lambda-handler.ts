import pino from "pino";
import { createDb, type Db } from "../db/pool.ts";
import { prepareDatabase } from "../db/prepare-database.ts";
import type { TableName } from "../db/tables.ts";
import { describeError, TransientError } from "../errors.ts";
import { IngestKeys } from "../keys/ingest-keys.ts";
import { createKeyProvider, type KeyProvider } from "../keys/key-provider.ts";
import { createLogger, usePino, type Logger } from "../log.ts";
import { readLambdaConfig, readLogLevel } from "../settings/config.ts";
import { sleep } from "./backoff.ts";
import type { IncomingMessage } from "./batch.ts";
import { commitMessages, type CommitResult } from "./commit-batch.ts";
import type { ContractCommitter } from "./commit-contract-batch.ts";

/**
 * The parts of Lambda's SQS event that masq reads, declared here rather than taken from @types/aws-lambda.
 * Lambda sends more (receiptHandle, md5OfBody, messageAttributes, eventSourceARN, …); masq needs none of it:
 * the event source mapping deletes what the handler does not report as failed.
 */
export interface SqsRecord {
  messageId: string;
  body: string;
  /** SQS system attributes, as strings. SentTimestamp is epoch milliseconds. */
  attributes?: { SentTimestamp?: string; ApproximateReceiveCount?: string; [name: string]: string | undefined };
  receiptHandle?: string;
  eventSource?: string;
  eventSourceARN?: string;
  awsRegion?: string;
}

export interface SqsEvent {
  Records: SqsRecord[];
}

/** The partial batch response: only these messages come back to the queue (needs ReportBatchItemFailures). */
export interface SqsBatchResponse {
  batchItemFailures: { itemIdentifier: string }[];
}

/** One record as the pipeline's pure middle takes it. A missing or unreadable SentTimestamp gives null. */
export function incomingMessage(record: SqsRecord, receivedAt: Date): IncomingMessage {
  const sent = Number(record.attributes?.SentTimestamp);
  return {
    messageId: record.messageId,
    body: record.body ?? "",
    sentAt: Number.isFinite(sent) && sent > 0 ? new Date(sent) : null,
    receivedAt,
  };
}

/** The part of Lambda's context object masq uses; optional so a test or a local harness can leave it out. */
export interface LambdaContext {
  awsRequestId?: string;
}

/**
 * How long a cold start waits for Postgres before it gives the batch back. Waiting longer only bills Lambda time:
 * SQS redelivers the batch after its visibility timeout, which is the retry.
 */
const COLD_START_WAIT_MS = 5_000;

/** State kept for the life of the execution environment: Lambda reuses it across invocations until it recycles it. */
interface Core {
  db: Db;
  table: TableName;
  provider: KeyProvider;
  keys: IngestKeys;
  batchSize: number;
  /** MASQ_CONTRACT naming a contract other than login's: batches go the contract path (commit-contract-batch.ts). */
  contract: ContractCommitter | undefined;
}

export interface SqsHandler {
  (event: SqsEvent, context?: LambdaContext): Promise<SqsBatchResponse>;
  /** Ends the Postgres pool. Lambda never calls it (it freezes and later discards the process); tests do. */
  close(): Promise<void>;
}

/**
 * The SQS event source handler: the same validate → mask → load core as `masq run` (prepareOutcome, commitBatch
 * with its ingest ledger), without the SQS source, since the event source mapping receives and deletes.
 *
 * Reported back (batchItemFailures), so SQS redelivers them: only messages whose batch did not commit.
 *  - malformed messages are quarantined and count as processed, exactly as in `masq run`;
 *  - a transient Postgres error (unreachable, failover, timeout) returns every uncommitted message;
 *  - anything else (a setting, a broken invariant such as a missing column, an unexpected error) throws: the
 *    invocation fails loudly, the whole batch comes back, and Lambda's error metrics show it.
 * Redelivery is always safe: the ledger turns an already-committed message into a no-op.
 */
export function createSqsHandler(env: NodeJS.ProcessEnv = process.env): SqsHandler {
  let core: Promise<Core> | undefined;
  let logger: Logger | undefined;
  let warnedNoSentTimestamp = false;

  // The handler is deployed as one bundle without node_modules (deploy/lambda/package.sh): pino must be in it.
  usePino(pino);
  const log = (): Logger => (logger ??= createLogger(safeLogLevel(env)));

  // Once per execution environment. A failed cold start is not cached: the next invocation tries again.
  const start = (): Promise<Core> =>
    (core ??= coldStart(env, log()).catch((err: unknown) => {
      core = undefined;
      throw err;
    }));

  const invoke = async (event: SqsEvent, context?: LambdaContext): Promise<SqsBatchResponse> => {
    const records = uniqueRecords(event.Records ?? []);
    if (records.length === 0) return { batchItemFailures: [] };
    const requestId = context?.awsRequestId;
    let c: Core;
    try {
      c = await start();
    } catch (err) {
      if (!isTransient(err)) {
        log().error({ err: describeError(err), requestId }, "masq cannot start; failing the invocation");
        throw err;
      }
      log().warn({ err: describeError(err), requestId, records: records.length }, "Postgres not reachable at cold start; the batch goes back to the queue");
      return failures(records.map((r) => r.messageId));
    }

    const receivedAt = new Date();
    const outcomes = records.map((r) => {
      const m = incomingMessage(r, receivedAt);
      if (m.sentAt === null && !warnedNoSentTimestamp) {
        warnedNoSentTimestamp = true;
        log().warn("an SQS record has no SentTimestamp attribute; create_date falls back to the invocation date");
      }
      return m;
    });

    const failed: string[] = [];
    const total: CommitResult = { written: 0, quarantined: 0, quarantinedByReason: {}, duplicates: 0, rejected: 0 };
    for (let i = 0; i < outcomes.length; i += c.batchSize) {
      const chunk = outcomes.slice(i, i + c.batchSize);
      // After a transient failure the database is away: give the rest back without trying.
      if (failed.length > 0) {
        failed.push(...chunk.map((o) => o.messageId));
        continue;
      }
      try {
        add(total, await commitOnce(c, chunk));
      } catch (err) {
        if (!isTransient(err)) {
          log().error({ err: describeError(err), requestId }, "failing the invocation: this needs an operator; the batch goes back to the queue");
          throw err;
        }
        log().warn({ err: describeError(err), requestId, returned: outcomes.length - i }, "commit failed; uncommitted messages go back to the queue");
        failed.push(...chunk.map((o) => o.messageId));
      }
    }
    log().info({ requestId, records: records.length, ...total, failed: failed.length }, "sqs batch processed");
    return failures(failed);
  };

  return Object.assign(invoke, {
    async close() {
      const c = await core?.catch(() => undefined);
      core = undefined;
      c?.keys.close();
      c?.provider.close();
      await c?.db.close();
    },
  });
}

async function coldStart(env: NodeJS.ProcessEnv, logger: Logger): Promise<Core> {
  // Settings first, so a bad one fails before anything is touched.
  const { databaseUrl, table, keys: keyConfig, pseudonymKeyOverride: override, batchSize, migrate, contract: contractFile } = readLambdaConfig(env);
  // Read and compiled once per execution environment; a file that does not read fails the cold start (a ConfigError).
  const contract = contractFile === undefined ? undefined : (await import("./run-contract.ts")).openRunContract(contractFile);
  // One connection per execution environment: Lambda runs one invocation at a time in it, and the commits of a
  // batch are sequential. Postgres connections in use therefore equal the function's concurrency.
  const db = createDb({ databaseUrl, poolSize: 1, logger });
  const provider = createKeyProvider(keyConfig);
  let keys: IngestKeys;
  try {
    await prepareDatabase(db, table, { migrate, logger, signal: AbortSignal.timeout(COLD_START_WAIT_MS), contract: contract?.writer.plan });
    keys = await IngestKeys.open({ pool: db.pool, provider, pseudonymKeyOverride: override, limits: keyConfig.limits }, AbortSignal.timeout(COLD_START_WAIT_MS));
  } catch (err) {
    provider.close();
    await db.close().catch(() => undefined);
    throw err;
  }
  const tables = contract === undefined ? `${table.schema}.${table.name}` : contract.writer.plan.tables.map((t) => `${t.table.schema}.${t.table.name}`).join(", ");
  logger.info(
    { table: tables, ...(contract === undefined ? {} : { contract: contract.writer.plan.file }), migrate, batchSize, keyProvider: provider.name, pseudonymKeyVersion: keys.pseudonym.version },
    "masq lambda ready",
  );
  return { db, table, provider, keys, batchSize, contract };
}

/**
 * Commits a chunk, trying a second time after a transient error: a connection that went stale while Lambda froze
 * the process fails on first use, and one quick retry on a fresh connection saves the batch a trip through the queue.
 */
async function commitOnce(c: Core, chunk: readonly IncomingMessage[]): Promise<CommitResult> {
  const commit = () => (c.contract === undefined ? commitMessages(c.db.pool, c.table, c.keys, chunk) : c.contract.commit(c.db.pool, c.keys, chunk));
  try {
    return await commit();
  } catch (err) {
    if (!(err instanceof TransientError)) throw err;
    await sleep(200);
    return commit();
  }
}

/**
 * Only a transient error (Postgres unreachable, failing over, timing out) gives messages back as item failures.
 * Anything else (a setting, a broken invariant, a bug) throws, so the invocation fails where an operator sees it;
 * the whole batch then comes back, which the ledger makes harmless. At a cold start, the bounded wait for Postgres
 * ends with an "interrupted" error whose cause is the last transient one.
 */
function isTransient(err: unknown): boolean {
  return err instanceof TransientError || (err instanceof Error && err.cause instanceof TransientError);
}

/** A standard queue may, rarely, put one message in a batch twice; the ledger statement needs distinct ids. */
function uniqueRecords(records: readonly SqsRecord[]): SqsRecord[] {
  const byId = new Map<string, SqsRecord>();
  for (const r of records) if (!byId.has(r.messageId)) byId.set(r.messageId, r);
  return [...byId.values()];
}

function failures(ids: readonly string[]): SqsBatchResponse {
  return { batchItemFailures: ids.map((id) => ({ itemIdentifier: id })) };
}

function add(total: CommitResult, r: CommitResult): void {
  total.written += r.written;
  total.quarantined += r.quarantined;
  total.duplicates += r.duplicates;
  total.rejected += r.rejected;
  for (const [reason, n] of Object.entries(r.quarantinedByReason)) total.quarantinedByReason[reason] = (total.quarantinedByReason[reason] ?? 0) + n;
}

/** The log level, or info when MASQ_LOG_LEVEL is invalid: the cold start then reports that error itself. */
function safeLogLevel(env: NodeJS.ProcessEnv) {
  try {
    return readLogLevel({ flags: {}, env });
  } catch {
    return "info" as const;
  }
}

/**
 * The instance Lambda calls: built from process.env at the first invocation and kept, with its Postgres pool,
 * for as long as Lambda keeps the execution environment.
 */
export const lambdaInstance: SqsHandler = createSqsHandler(process.env);

/** The Lambda entry point: handler `src/ingest/lambda-handler.handler` (see docs/deploy.md). */
export async function handler(event: SqsEvent, context?: LambdaContext): Promise<SqsBatchResponse> {
  return lambdaInstance(event, context);
}
