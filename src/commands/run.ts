import { getHeapStatistics } from "node:v8";
import type pg from "pg";
import { ensureLedgerPartitions, pruneLedger } from "../db/ledger.ts";
import { targetText } from "../db/connection.ts";
import { createDb, type Db } from "../db/pool.ts";
import { prepareDatabase } from "../db/prepare-database.ts";
import { ConfigError, describeError, errorLine, FatalError, TransientError } from "../errors.ts";
import { retryTransient } from "../ingest/backoff.ts";
import { combineObservers } from "../ingest/observer.ts";
import type { ThreadUsage } from "../ingest/prepare-protocol.ts";
import { mainThreadUsage, PrepareThreads } from "../ingest/prepare-threads.ts";
import { receiveReservationFloor, receiveSlots, Runner } from "../ingest/runner.ts";
import type { QueueSource } from "../ingest/sqs-source.ts";
import { SqsThread } from "../ingest/sqs-thread.ts";
import { createKeyProvider } from "../keys/key-provider.ts";
import { openIngestKeys, type IngestKeys } from "../keys/ingest-keys.ts";
import { createLogger, type Logger } from "../log.ts";
import type { startHttpServer } from "../ops/http.ts";
import type { Metrics } from "../ops/metrics.ts";
import { createProgress, isInteractive } from "../ops/progress.ts";
import type { ContractCommitter } from "../ingest/commit-contract-batch.ts";
import { databaseSetting, type PipelineConfig, readConnectTimeoutMs, readContractFile, readLogFormat, readNamedTable, readRetentionDays, readRunConfig, settingSources, sqsTargetText } from "../settings/config.ts";
import { onShutdownSignals } from "../signals.ts";

/**
 * `masq run [--drain]`: returns the process exit code. The service waits for Postgres, SQS and KMS as long as it
 * takes (logging what it waits for, by setting); a drain is a one-shot job and gives up after
 * MASQ_CONNECT_TIMEOUT_SECONDS.
 */
export async function runCommand(flags: Record<string, unknown>): Promise<number> {
  const src = settingSources(flags, process.env);
  // Start-up's steps are marked (microseconds each; nothing is written unless a preload reads them): where the time
  // from spawn to the first receive goes (scripts/bench/first-receive.ts --trace, docs/benchmark.md).
  performance.mark("masq:run");
  const drain = flags.drain === true;
  const config = readRunConfig(src, drain);
  const retentionDays = readRetentionDays(src);
  const deadlineMs = drain ? readConnectTimeoutMs(src) : undefined;
  const sqsTarget = sqsTargetText(src);
  // A contract other than login's is read and compiled here, once: a file that does not read stops masq (exit 2)
  // before anything is reached. Unset (or the shipped login contract), masq runs the login path as it always did.
  const contractFile = readContractFile(src);
  const contract: ContractCommitter | undefined = contractFile === undefined ? undefined : (await import("../ingest/run-contract.ts")).openRunContract(contractFile);
  // The table the periodic prune names (it checks it, 106_contract_tables.sql): the login table, or with a contract
  // its first table with a create_date. Either way the prune keeps every vault value that a row of any registered
  // table, or a quarantine record, of the period uses (masq.values_in_use).
  const pruneTable = contract === undefined ? config.table : contract.writer.plan.tables.find((t) => t.columns.some((c) => c.name === "create_date"))?.table;
  if (retentionDays !== undefined && pruneTable === undefined) {
    throw new ConfigError("MASQ_VAULT_RETENTION_DAYS", "is set, but no table of the contract (MASQ_CONTRACT) has a create_date, by which retention dates rows: give an event type $sent_at generalized to the day as column create_date, or unset it");
  }
  const logger = createLogger(config.logLevel, undefined, readLogFormat(src));
  if (contract !== undefined) {
    const { plan } = contract.writer;
    logger.info({ contract: plan.file, tables: plan.tables.map((t) => `${t.table.schema}.${t.table.name}`) }, "ingesting by contract");
    // Each event type names its own table; prepare threads mask login events only.
    if (readNamedTable(src) !== undefined) logger.warn({ contract: plan.file }, "MASQ_TABLE is ignored with a contract: each event type names its table");
    if ((config.pipeline.prepareThreads ?? 0) > 0) logger.info("prepare threads are not used with a contract: batches are prepared on the main thread");
  }
  const setupAbort = new AbortController();
  // Start-up's steps that run side by side: a signal ends them, and so does a failure of another (finally, below).
  const startAbort = new AbortController();
  setupAbort.signal.addEventListener("abort", () => startAbort.abort(setupAbort.signal.reason), { once: true });
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
    setting: databaseSetting(src),
    connectTimeoutMs: deadlineMs,
    poolSize: config.pipeline.writers + 2,
    logger,
  });
  let sqsThread: SqsThread | undefined;
  // Set once the endpoint's protocol is known (detectProtocol below); until then readiness reports the wait.
  let source: QueueSource | undefined;
  let sqsWaiting = "finding the SQS endpoint's protocol";
  // Metrics only where /metrics serves them: prom-client is a tenth of a drain's start-up, for numbers nobody reads.
  const metrics: Metrics | undefined = config.http ? new (await import("../ops/metrics.ts")).Metrics() : undefined;
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
    // Started first: every SQS call is made on the SQS thread, which loads the AWS SDK while masq reaches Postgres
    // (the SDK's per-call work was most of the main thread's). The prepare threads start last (below).
    sqsThread = new SqsThread({ data: { queueUrl: config.queueUrl, exitAfterDeletes: testExitAfter(process.env, "MASQ_TEST_SQS_THREAD_EXIT_AFTER") }, logger });
    const sqsSource = sqsThread;
    // Up before anything else: liveness holds while masq waits for Postgres or SQS; readiness tells the truth.
    if (config.http && metrics) {
      const { readinessProbe, startHttpServer } = await import("../ops/http.ts");
      const readiness = readinessProbe({ pool: db.pool, source: () => source, sqsNotReady: () => sqsWaiting, targets: { postgres: db.target, sqs: sqsTarget } });
      http = await startHttpServer({ ...config.http, metrics, readiness, logger });
    }
    // SQS first: a wrong queue, region or credentials must stop masq before it migrates anything.
    const sqsChecked = retryTransient(
      () => sqsSource.detectProtocol({ region: config.region, endpoint: config.sqsEndpoint, setting: config.sqsProtocol, signal: setupAbort.signal }),
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
    // Postgres is checked meanwhile (connection, migrations, the target table), and written only once SQS has
    // answered. SQS's error is reported first, as when the two ran one after the other; Postgres's after it.
    const databaseReady = prepareDatabase(db, config.table, { migrate: config.migrate, logger, signal: startAbort.signal, deadlineMs, writesAfter: sqsChecked, contract: contract?.writer.plan });
    databaseReady.catch(() => undefined);
    // KMS answers whatever SQS and Postgres say: the master key is looked up meanwhile (the provider keeps it), and
    // a failure is left for openIngestKeys to report, in its turn.
    if (provider.name === "kms") provider.currentMasterKeyId(startAbort.signal).catch(() => undefined);
    const protocol = await sqsChecked;
    performance.mark("masq:sqs-protocol");
    logger.info({ protocol, setting: config.sqsProtocol === "auto" ? "detected" : "MASQ_SQS_PROTOCOL" }, `SQS protocol: ${protocol}`);
    sqsSource.open({
      region: config.region,
      endpoint: config.sqsEndpoint,
      protocol,
      maxSockets: config.pipeline.receivers + 32,
      requestTimeoutMs: config.pipeline.waitTimeSeconds * 1000 + 15_000,
      queueUrl: config.queueUrl,
      // The runner retries every call itself, with its own backoff: SDK retries would only add to the wait.
      maxAttempts: 1,
    });
    source = sqsSource;
    performance.mark("masq:sqs-client");
    // The queue's retention (for pruning the ledger) and largest message (for the receives' reservation) are asked
    // while Postgres is prepared: it also makes this client's
    // first call, which costs the most (credentials, endpoint, signing key), before the receivers need it. Its
    // failure is reported after the database's and the keys', the order in which masq checked them before.
    const limitsAsked = retryTransient(() => sqsSource.queueLimits(startAbort.signal), {
      what: "reaching SQS",
      signal: startAbort.signal,
      isTransient: (e) => e instanceof TransientError,
      deadlineMs,
      object: sqsTarget,
      onRetry: (err, delay) => logger.warn({ err: describeError(err), target: sqsTarget, retryInMs: Math.round(delay) }, "SQS not reachable (QUEUE_URL); waiting"),
    });
    limitsAsked.catch(() => undefined);
    await databaseReady;
    performance.mark("masq:database");
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
    performance.mark("masq:keys");
    const limits = await limitsAsked;
    const retention = limits.retentionSeconds;
    performance.mark("masq:retention");
    if (setupAbort.signal.aborted) return 0;
    warnReceiveBudget(config.pipeline, limits.maxMessageBytes, logger);

    // Ledger rows outlive the queue's retention by a day; older ids can never be redelivered. Pruning drops whole day
    // partitions and creates the next days' (a drain only creates them); a batch never runs DDL.
    const prune = () =>
      pruneLedger(db.pool, retention + 86_400)
        .then((p) => (p.dropped.length > 0 || p.deleted > 0) && logger.info({ dropped: p.dropped, deleted: p.deleted }, "pruned ingest ledger"))
        .catch((err: unknown) => logger.warn({ err: describeError(err) }, "ledger pruning failed; will try again"));
    if (!drain) {
      void prune();
      pruneTimer = setInterval(() => void prune(), 3_600_000);
    } else {
      await ensureLedgerPartitions(db.pool).catch((err: unknown) => logger.warn({ err: describeError(err) }, "creating the ingest ledger's partitions failed"));
    }
    // Retention (docs/operations.md, "Retention"): on a pool of its own, so that it never takes ingestion's connections.
    if (retentionDays !== undefined && !drain) {
      await requirePrunePrivilege(db.pool);
      pruneDb = createDb({ databaseUrl: config.databaseUrl, setting: databaseSetting(src), poolSize: 3, logger });
      // Awaited, though it loads kysely (about 0.2 s, once, in a service that runs for days): a retention the
      // operator asked for that cannot start must stop masq, not leave a warning and values kept past their period.
      const { startPeriodicPrune } = await import("../lifecycle/retention.ts");
      vaultPrune = startPeriodicPrune({ pool: pruneDb.pool, provider, table: pruneTable!, days: retentionDays, logger });
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

    // Started last: a thread loads its modules on the other core, which, on two cores, is the one fauxqs or Postgres
    // and the main thread's own start-up were using (spawn to first receive, docs/benchmark.md). It is up before the
    // first batch is cut (the receives' round trip and the batch wait); until then a batch waits in its queue.
    const prepareThreads = contract === undefined ? (config.pipeline.prepareThreads ?? 0) : 0;
    if (prepareThreads > 0) threads = new PrepareThreads({ count: prepareThreads, logger, exitAfterBatches: testExitAfter(process.env, "MASQ_TEST_PREPARE_THREAD_EXIT_AFTER") });
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
      contract,
      maxMessageBytes: limits.maxMessageBytes,
    });
    performance.mark("masq:runner");
    const result = await runner.run({ drain });
    // The bar's last drawing comes before the closing lines, and is never redrawn after them.
    progress?.stop({ complete: drain && !result.fatal && !result.timedOut });
    // Each thread's CPU time (p3-bench reads `threads`): the prepare threads report theirs as they stop.
    const sqsUsage = await sqsSource.close();
    const threadUsage: ThreadUsage[] = [mainThreadUsage(), ...(sqsUsage ? [sqsUsage] : []), ...((await threads?.close()) ?? [])];
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
    startAbort.abort();
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
    await sqsThread?.close();
    await db.close().catch(() => undefined);
    logger.flush();
  }
}

/**
 * Pruning deletes data and seals an audit row for it: the login needs masq_erase (docs/operations.md, "Retention",
 * says why the service login gets the role rather than a narrower grant to masq_ingest). Refused at start, exit 2.
 */
async function requirePrunePrivilege(pool: pg.Pool): Promise<void> {
  // On pg, not kysely: this runs at start, which must not wait for kysely to load (start-up-imports.test.ts).
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

/**
 * MASQ_TEST_PREPARE_THREAD_EXIT_AFTER and MASQ_TEST_SQS_THREAD_EXIT_AFTER: the tests' way to crash a prepare thread
 * (prepare-protocol.ts) or the SQS thread (ingest/sqs-thread-protocol.ts).
 */
function testExitAfter(env: NodeJS.ProcessEnv, name: "MASQ_TEST_PREPARE_THREAD_EXIT_AFTER" | "MASQ_TEST_SQS_THREAD_EXIT_AFTER"): number | undefined {
  const v = env[name];
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

/**
 * Every receive under way reserves room for ten bodies of the largest size the queue may hold (runner.ts), so
 * MASQ_MAX_IN_FLIGHT_BYTES bounds how many run at once; its default leaves room for every receiver. Receivers beyond
 * a budget set lower wait for a slot, which an operator who raised MASQ_RECEIVERS for a distant SQS would otherwise
 * never learn. And the heap follows the budget: at worst about six times it (1 MiB bodies held as two-byte strings,
 * test/integration/poison.test.ts), which a heap limit below that cannot take (docs/operations.md, "Many receivers").
 */
function warnReceiveBudget(pipeline: PipelineConfig, maxMessageBytes: number, logger: Logger): void {
  const MiB = 1024 * 1024;
  const slots = receiveSlots(pipeline.maxInFlightBytes, maxMessageBytes);
  if (slots < pipeline.receivers) {
    const floor = receiveReservationFloor(maxMessageBytes);
    const needed = Math.ceil((pipeline.receivers * 10 * floor) / MiB) + 8;
    logger.warn(
      { receivers: pipeline.receivers, receiveSlots: slots, maxInFlightBytes: pipeline.maxInFlightBytes, reservedPerReceiveBytes: 10 * floor },
      `only ${slots} of MASQ_RECEIVERS=${pipeline.receivers} can receive at once: each receive reserves room for 10 messages of ${Math.round(floor / 1024)} KiB ` +
        `(the queue's MaximumMessageSize, at most 256 KiB) within MASQ_MAX_IN_FLIGHT_BYTES (${Math.round(pipeline.maxInFlightBytes / MiB)} MiB); ` +
        `raise it to ${needed} MiB (or unset it), or lower the queue's MaximumMessageSize to the largest event you send (docs/operations.md, "Many receivers")`,
    );
  }
  const heapLimitMb = Math.round(getHeapStatistics().heap_size_limit / MiB);
  const worstMb = Math.round((WORST_HEAP_PER_BODY_BYTE * pipeline.maxInFlightBytes) / MiB);
  if (worstMb > heapLimitMb) {
    logger.warn(
      { maxInFlightBytes: pipeline.maxInFlightBytes, heapLimitMb, worstHeapMb: worstMb },
      `MASQ_MAX_IN_FLIGHT_BYTES (${Math.round(pipeline.maxInFlightBytes / MiB)} MiB) may take up to about ${worstMb} MB of heap with 1 MiB bodies, more than this process's limit of ${heapLimitMb} MB: ` +
        `raise --max-old-space-size in NODE_OPTIONS, or lower MASQ_MAX_IN_FLIGHT_BYTES or MASQ_RECEIVERS (docs/operations.md, "Many receivers")`,
    );
  }
}

/** The main thread's heap per byte of bodies held, at worst (190 MB at 32 MiB in poison.test.ts's worst case). */
const WORST_HEAP_PER_BODY_BYTE = 6;
