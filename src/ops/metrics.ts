import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { CommittedBatch, PipelineObserver } from "../ingest/observer.ts";
import type { QueueCounts } from "../ingest/sqs-source.ts";

/**
 * masq's Prometheus metrics. One registry per process (not prom-client's global one), so tests and the Lambda
 * entry point can have their own. Names follow Prometheus conventions: *_total counters, base units (seconds).
 */
export class Metrics implements PipelineObserver {
  readonly registry = new Registry();
  private readonly receivedTotal: Counter;
  private readonly writtenTotal: Counter;
  private readonly writtenByEventTotal: Counter<"event_type">;
  private readonly quarantinedTotal: Counter<"reason">;
  private readonly duplicatesTotal: Counter;
  private readonly deletedTotal: Counter;
  private readonly retriesTotal: Counter<"cause">;
  private readonly visibilityExtendedTotal: Counter;
  private readonly batchSize: Histogram;
  private readonly commitSeconds: Histogram;
  private readonly lagSeconds: Histogram;
  private readonly inFlightGauge: Gauge;
  private readonly queueMessages: Gauge<"state">;
  private readonly oldestReceivedAge: Gauge;
  private readonly lastCommit: Gauge;
  private readonly queuePollErrors: Counter;
  private readonly keyProviderCalls: Counter<"operation" | "outcome">;
  private readonly dataKeysGenerated: Counter;
  private readonly pseudonymKeyVersion: Gauge;
  private readonly masterKeyInfo: Gauge<"master_key">;
  /** Oldest SentTimestamp seen since the last scrape; the gauge reports its age, then the window restarts. */
  private oldestInWindow: number | null = null;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: "masq_" });
    this.receivedTotal = new Counter({ name: "masq_messages_received_total", help: "Messages received from SQS (redeliveries included).", registers });
    this.writtenTotal = new Counter({ name: "masq_rows_written_total", help: "Rows written to the target table.", registers });
    this.writtenByEventTotal = new Counter({
      name: "masq_rows_written_by_event_total",
      help: "Rows written by event type, when masq ingests by a contract (MASQ_CONTRACT).",
      labelNames: ["event_type"],
      registers,
    });
    this.quarantinedTotal = new Counter({
      name: "masq_messages_quarantined_total",
      help: "Messages written to masq.quarantine, by reason code.",
      labelNames: ["reason"],
      registers,
    });
    this.duplicatesTotal = new Counter({
      name: "masq_duplicates_skipped_total",
      help: "Messages whose id the ingest ledger already held (redeliveries of committed work), skipped.",
      registers,
    });
    this.deletedTotal = new Counter({ name: "masq_messages_deleted_total", help: "Messages deleted from SQS after their batch committed.", registers });
    this.retriesTotal = new Counter({ name: "masq_retries_total", help: "Retried operations, by cause.", labelNames: ["cause"], registers });
    this.visibilityExtendedTotal = new Counter({
      name: "masq_visibility_extensions_total",
      help: "Held messages whose visibility timeout was extended.",
      registers,
    });
    this.batchSize = new Histogram({
      name: "masq_batch_size",
      help: "Messages per committed batch.",
      buckets: [1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
      registers,
    });
    this.commitSeconds = new Histogram({
      name: "masq_commit_duration_seconds",
      help: "Time to commit a batch, retries and splits included.",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.lagSeconds = new Histogram({
      name: "masq_end_to_end_lag_seconds",
      help: "Commit time minus the message's SQS SentTimestamp.",
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400],
      registers,
    });
    this.inFlightGauge = new Gauge({ name: "masq_messages_in_flight", help: "Messages held between receive and delete.", registers });
    this.queueMessages = new Gauge({
      name: "masq_queue_messages",
      help: "SQS approximate message counts by state (visible, in_flight, delayed), polled.",
      labelNames: ["state"],
      registers,
    });
    this.queuePollErrors = new Counter({ name: "masq_queue_poll_errors_total", help: "Failed polls of the queue's attributes.", registers });
    this.keyProviderCalls = new Counter({
      name: "masq_key_provider_calls_total",
      help: "Calls to the master key's provider (KMS, or the local provider), by operation and outcome (ok, error).",
      labelNames: ["operation", "outcome"],
      registers,
    });
    this.dataKeysGenerated = new Counter({
      name: "masq_data_keys_generated_total",
      help: "Vault data keys generated (one provider call each; rolled over by age and use).",
      registers,
    });
    this.pseudonymKeyVersion = new Gauge({
      name: "masq_pseudonym_key_version",
      help: "Version of the pseudonym key this process masks with (changes when a rotation switches keys).",
      registers,
    });
    this.masterKeyInfo = new Gauge({
      name: "masq_master_key_info",
      help: "1 for the master key new keys are wrapped under (a KMS key ARN, or local:<fingerprint>).",
      labelNames: ["master_key"],
      registers,
    });
    this.lastCommit = new Gauge({ name: "masq_last_commit_timestamp_seconds", help: "Unix time of the last committed batch.", registers });
    // SQS publishes the age of the oldest message only to CloudWatch; masq reports what it can see itself.
    const takeOldestAge = (): number => {
      const age = this.oldestInWindow === null ? 0 : Math.max(0, (Date.now() - this.oldestInWindow) / 1000);
      this.oldestInWindow = null;
      return age;
    };
    this.oldestReceivedAge = new Gauge({
      name: "masq_oldest_received_message_age_seconds",
      help: "Age (now − SentTimestamp) of the oldest message received since the previous scrape; 0 when none was received.",
      registers,
      collect() {
        this.set(takeOldestAge());
      },
    });
  }

  keyProviderCall(operation: string, ok: boolean): void {
    this.keyProviderCalls.inc({ operation, outcome: ok ? "ok" : "error" });
  }

  dataKeyGenerated(): void {
    this.dataKeysGenerated.inc();
  }

  keysInUse(masterKey: string, pseudonymKeyVersion: number): void {
    this.masterKeyInfo.reset();
    this.masterKeyInfo.set({ master_key: masterKey }, 1);
    this.pseudonymKeyVersion.set(pseudonymKeyVersion);
  }

  pseudonymKeyInUse(version: number): void {
    this.pseudonymKeyVersion.set(version);
  }

  received(count: number, oldestSentAt: Date | null): void {
    this.receivedTotal.inc(count);
    if (oldestSentAt !== null && (this.oldestInWindow === null || oldestSentAt.getTime() < this.oldestInWindow)) {
      this.oldestInWindow = oldestSentAt.getTime();
    }
  }

  committed(b: CommittedBatch): void {
    this.writtenTotal.inc(b.written);
    if (b.writtenByEvent !== undefined) for (const [event_type, n] of Object.entries(b.writtenByEvent)) this.writtenByEventTotal.inc({ event_type }, n);
    this.duplicatesTotal.inc(b.duplicates);
    for (const [reason, n] of Object.entries(b.quarantinedByReason)) this.quarantinedTotal.inc({ reason }, n);
    this.batchSize.observe(b.size);
    this.commitSeconds.observe(b.seconds);
    for (const lag of b.lagSeconds) this.lagSeconds.observe(lag);
    this.lastCommit.set(Date.now() / 1000);
  }

  deleted(count: number): void {
    this.deletedTotal.inc(count);
  }

  retried(cause: string): void {
    this.retriesTotal.inc({ cause });
  }

  inFlight(count: number): void {
    this.inFlightGauge.set(count);
  }

  visibilityExtended(count: number): void {
    this.visibilityExtendedTotal.inc(count);
  }

  queueCounts(c: QueueCounts): void {
    this.queueMessages.set({ state: "visible" }, c.visible);
    this.queueMessages.set({ state: "in_flight" }, c.inFlight);
    this.queueMessages.set({ state: "delayed" }, c.delayed);
  }

  queuePollFailed(): void {
    this.queuePollErrors.inc();
  }
}
