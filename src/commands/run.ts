import { databaseSetting, readConnectTimeoutMs, readLogFormat, readRetentionDays, readRunConfig, sqsTargetText } from "../config.ts";
import { ConfigError, describeError, errorLine, FatalError, TransientError } from "../errors.ts";
import { createLogger } from "../log.ts";
import { retryTransient } from "../runner/backoff.ts";
import { Runner } from "../runner/runner.ts";
import { createDb, type Db } from "../sink/db.ts";
import { targetText } from "../sink/pg-target.ts";
import { pruneLedger } from "../sink/prune-ledger.ts";
import { createSqsClient } from "../source/sqs-client.ts";
import { SqsSource } from "../source/sqs-source.ts";
import { detectSqsProtocol } from "../source/sqs-protocol.ts";
import type { SQSClient } from "@aws-sdk/client-sqs";
import type pg from "pg";
import { onShutdownSignals } from "./signals.ts";
import { startHttpServer } from "../http/server.ts";
import { readinessProbe } from "../http/readiness.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { combineObservers } from "../runner/observer.ts";
import { createProgress, isInteractive } from "../progress/progress.ts";
import { prepareDatabase } from "./setup.ts";
import { createKeyProvider } from "../vault/key-provider-from-config.ts";
import { openIngestKeys } from "./open-keys.ts";
import type { IngestKeys } from "../vault/ingest-keys.ts";
import { startPeriodicPrune } from "../lifecycle/periodic-prune.ts";
import { mainThreadUsage, PrepareThreads } from "../runner/prepare-threads.ts";
import type { ThreadUsage } from "../runner/prepare-protocol.ts";

/**
 * `masq run [--drain]`: returns the process exit code. The service waits for Postgres, SQS and KMS as long as it
 * takes (logging what it waits for, by setting); a drain is a one-shot job and gives up after
 * MASQ_CONNECT_TIMEOUT_SECONDS.
 */
export async function runCommand(flags: Record<string, unknown>): Promise<number> {
  const drain = flags.drain === true;
  const config = readRunConfig(flags, process.env, drain);
  const retentionDays = readRetentionDays(process.env);
  const deadlineMs = drain ? readConnectTimeoutMs(process.env) : undefined;
  const sqsTarget = sqsTargetText(flags, process.env);
  const logger = createLogger(config.logLevel, undefined, readLogFormat(process.env));
  const setupAbort = new AbortController();
  let runner: Runner | undefined;
  const signals = onShutdownSignals({
    first: (signal) => {
      logger.info(
        { signal },
        `shutting down: finishing the current batches and long polls (up to ${config.pipeline.waitTimeSeconds} s; signal again to exit at once)`,
      );
      setupAbort.abort(signal);
      runner?.stop();
    },
    second: (signal) => {
      logger.warn({ signal }, "exiting at once; uncommitted messages will be redelivered");
      logger.flush();
    },
  });

  const db = createDb({
    databaseUrl: config.databaseUrl,
    setting: databaseSetting(flags, process.env),
    connectTimeoutMs: deadlineMs,
    poolSize: config.pipeline.writers + 2,
    logger,
  });
  // Made once the endpoint's protocol is known (detectSqsProtocol below); until then readiness reports the wait.
  let sqs: SQSClient | undefined;
  let source: SqsSource | undefined;
  let sqsWaiting = "finding the SQS endpoint's protocol";
  // Metrics only where /metrics serves them: prom-client is a tenth of a drain's start-up, for numbers nobody reads.
  const metrics: Metrics | undefined = config.http ? new (await import("../metrics/metrics.ts")).Metrics() : undefined;
  const provider = createKeyProvider(config.keys, metrics && ((op, ok) => metrics.keyProviderCall(op, ok)));
  let keys: IngestKeys | undefined;
  let pruneTimer: NodeJS.Timeout | undefined;
  let vaultPrune: { stop(): Promise<void> } | undefined;
  let pruneDb: Db | undefined;
  let queuePoll: NodeJS.Timeout | undefined;
  let progress: ReturnType<typeof createProgress>;
  let http: Awaited<ReturnType<typeof startHttpServer>> | undefined;
  let threads: PrepareThreads | undefined;
  try {
    // Started first: they boot while masq reaches SQS and Postgres.
    const prepareThreads = config.pipeline.prepareThreads ?? 0;
    if (prepareThreads > 0) threads = new PrepareThreads({ count: prepareThreads, logger, exitAfterBatches: testExitAfter(process.env) });
    // Up before anything else: liveness holds while masq waits for Postgres or SQS; readiness tells the truth.
    if (config.http && metrics) {
      const readiness = readinessProbe({ pool: db.pool, source: () => source, sqsNotReady: () => sqsWaiting, targets: { postgres: db.target, sqs: sqsTarget } });
      http = await startHttpServer({ ...config.http, metrics, readiness, logger });
    }
    // SQS first: a wrong queue, region or credentials must stop masq before it migrates anything.
    const protocol = await retryTransient(
      () =>
        detectSqsProtocol({ queueUrl: config.queueUrl, region: config.region, endpoint: config.sqsEndpoint, setting: config.sqsProtocol, signal: setupAbort.signal }),
      {
        what: "reaching SQS",
        signal: setupAbort.signal,
        isTransient: (e) => e instanceof TransientError,
        deadlineMs,
        object: sqsTarget,
        onRetry: (err, delay) => {
          sqsWaiting = `waiting for SQS (${sqsTarget}): ${err.message}`;
          logger.warn({ err: describeError(err), target: sqsTarget, retryInMs: Math.round(delay) }, "SQS not reachable (QUEUE_URL); waiting");
        },
      },
    );
    logger.info({ protocol, setting: config.sqsProtocol === "auto" ? "detected" : "MASQ_SQS_PROTOCOL" }, `SQS protocol: ${protocol}`);
    sqs = createSqsClient({
      region: config.region,
      endpoint: config.sqsEndpoint,
      protocol,
      maxSockets: config.pipeline.receivers + 32,
      requestTimeoutMs: config.pipeline.waitTimeSeconds * 1000 + 15_000,
      queueUrl: config.queueUrl,
      // The runner retries every call itself, with its own backoff: SDK retries would only add to the wait.
      maxAttempts: 1,
    });
    const sqsSource = new SqsSource(sqs, config.queueUrl);
    source = sqsSource;
    await prepareDatabase(db, config.table, { migrate: config.migrate, logger, signal: setupAbort.signal, deadlineMs });
    keys = await openIngestKeys({
      db,
      provider,
      config: config.keys,
      override: config.pseudonymKeyOverride,
      logger,
      metrics,
      signal: setupAbort.signal,
      deadlineMs,
    });
    const retention = await retryTransient(() => sqsSource.retentionSeconds(setupAbort.signal), {
      what: "reaching SQS",
      signal: setupAbort.signal,
      isTransient: (e) => e instanceof TransientError,
      deadlineMs,
      object: sqsTarget,
      onRetry: (err, delay) => logger.warn({ err: describeError(err), target: sqsTarget, retryInMs: Math.round(delay) }, "SQS not reachable (QUEUE_URL); waiting"),
    });
    if (setupAbort.signal.aborted) return 0;

    // Ledger rows outlive the queue's retention by a day; older ids can never be redelivered.
    const prune = () =>
      pruneLedger(db.pool, retention + 86_400)
        .then((n) => n > 0 && logger.info({ pruned: n }, "pruned ingest ledger"))
        .catch((err: unknown) => logger.warn({ err: describeError(err) }, "ledger pruning failed; will try again"));
    if (!drain) {
      void prune();
      pruneTimer = setInterval(() => void prune(), 3_600_000);
    }
    // Retention (docs/operations.md, "Retention"): on a pool of its own, so that it never takes ingestion's connections.
    if (retentionDays !== undefined && !drain) {
      await requirePrunePrivilege(db.pool);
      pruneDb = createDb({ databaseUrl: config.databaseUrl, setting: databaseSetting(flags, process.env), poolSize: 3, logger });
      vaultPrune = startPeriodicPrune({ pool: pruneDb.pool, provider, table: config.table, days: retentionDays, logger });
    }

    // A bar with rate and ETA when a person watches a drain; the periodic log lines otherwise. Its total starts at
    // what the queue holds (visible, in flight, delayed) and grows only when more arrives.
    if (drain && isInteractive()) {
      const start = await sqsSource.counts(setupAbort.signal).catch(() => undefined);
      progress = createProgress("draining", { total: start ? start.visible + start.inFlight + start.delayed : 0 });
    }
    // Queue depth for /metrics, dashboards and the bar; a failed poll is counted, never fatal.
    const pollQueue = () => {
      const deletedThen = progress?.deletedSoFar() ?? 0;
      return sqsSource.counts().then(
        (c) => {
          metrics?.queueCounts(c);
          progress?.queueCounts(c, deletedThen);
        },
        () => metrics?.queuePollFailed(),
      );
    };
    if (metrics || progress) {
      void pollQueue();
      queuePoll = setInterval(() => void pollQueue(), progress ? 3_000 : 15_000);
    }

    runner = new Runner({
      source: sqsSource,
      pool: db.pool,
      table: config.table,
      keys,
      logger,
      config: { ...config.pipeline, giveUpAfterMs: deadlineMs },
      targets: { postgres: targetText(db.target), sqs: sqsTarget },
      observer: combineObservers(metrics, progress),
      preparer: threads,
    });
    const result = await runner.run({ drain });
    // The bar's last drawing comes before the closing lines, and is never redrawn after them.
    progress?.stop({ complete: drain && !result.fatal && !result.timedOut });
    // Each thread's CPU time (p3-bench reads `threads`): the prepare threads report theirs as they stop.
    const threadUsage: ThreadUsage[] = [mainThreadUsage(), ...((await threads?.close()) ?? [])];
    threads = undefined;
    const usage = process.resourceUsage();
    logger.info(
      {
        cpuUserMs: Math.round(usage.userCPUTime / 1000),
        cpuSystemMs: Math.round(usage.systemCPUTime / 1000),
        maxRssMb: Math.round(usage.maxRSS / 1024),
        threads: threadUsage,
      },
      "process usage",
    );
    if (result.fatal) {
      process.stderr.write(`${errorLine(result.fatal)}\n`);
      return 1;
    }
    if (result.timedOut) {
      process.stderr.write(
        `masq: the graceful stop did not finish in time (MASQ_SHUTDOWN_TIMEOUT_MS): uncommitted messages will be redelivered and written once; raise the setting if batches need longer\n`,
      );
      return 1;
    }
    return 0;
  } catch (err) {
    if (setupAbort.signal.aborted && !(err instanceof FatalError)) return 0;
    // The JSON line keeps the detail for the logs; the CLI prints the one line for a person (stderr) and exits.
    logger.error({ err: describeError(err) }, "masq stopped");
    throw err;
  } finally {
    await threads?.close();
    clearInterval(pruneTimer);
    await vaultPrune?.stop();
    await pruneDb?.close().catch(() => undefined);
    clearInterval(queuePoll);
    progress?.stop();
    await http?.close();
    keys?.close();
    provider.close();
    signals.dispose();
    sqs?.destroy();
    await db.close().catch(() => undefined);
    logger.flush();
  }
}

/**
 * Pruning deletes data and seals an audit row for it: the login needs masq_erase (docs/operations.md, "Retention",
 * says why the service login gets the role rather than a narrower grant to masq_ingest). Refused at start, exit 2.
 */
async function requirePrunePrivilege(pool: pg.Pool): Promise<void> {
  const r = await pool.query<{ ok: boolean; login: string }>(
    "SELECT has_function_privilege('masq.vault_prune_batch(regclass, integer, text, text, integer, jsonb, integer)', 'EXECUTE') AS ok, session_user AS login",
  );
  if (r.rows[0]?.ok !== true) {
    throw new ConfigError(
      "MASQ_VAULT_RETENTION_DAYS",
      `is set, but login ${r.rows[0]?.login ?? "?"} does not hold masq_erase, which pruning needs: GRANT masq_erase TO that login, or unset the setting here and run masq vault prune as another login`,
      { what: "cannot prune" },
    );
  }
}

/** MASQ_TEST_PREPARE_THREAD_EXIT_AFTER: the tests' way to crash a prepare thread (prepare-protocol.ts). */
function testExitAfter(env: NodeJS.ProcessEnv): number | undefined {
  const v = env.MASQ_TEST_PREPARE_THREAD_EXIT_AFTER;
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}
