import type pg from "pg";
import type { PipelineConfig } from "../settings/config.ts";
import { ConfigError, describeError, FatalError, stoppedWorking, TransientError, UnreachableError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Handle, QueueSource, ReceivedMessage } from "./sqs-source.ts";
import type { TableName } from "../db/tables.ts";
import type { ReasonCode } from "./login-event.ts";
import type { IngestKeys } from "../keys/ingest-keys.ts";
import { backoffMs, sleep } from "./backoff.ts";
import { commitMessages, type BatchPreparer, type CommitResult } from "./commit-batch.ts";
import type { ContractCommitter } from "./commit-contract-batch.ts";
import type { IncomingMessage } from "./batch.ts";
import { createProgressLog, PROGRESS_EVERY_MS, type ProgressLogTiming, emptyStats, type PipelineObserver, type RunStats } from "./observer.ts";

export interface RunnerDeps {
  /** SqsSource, or SqsThread (ingest/sqs-thread.ts): the same calls on a thread of their own. */
  source: QueueSource;
  pool: pg.Pool;
  table: TableName;
  keys: IngestKeys;
  logger: Logger;
  config: PipelineConfig;
  observer?: PipelineObserver | undefined;
  /**
   * A contract other than login's (MASQ_CONTRACT): batches go the contract path (commit-contract-batch.ts), on this
   * thread, to the contract's tables; `table` and `preparer` are then unused. Absent: the login path. Given as an
   * object so that the login path's start loads none of the contract path's modules.
   */
  contract?: ContractCommitter | undefined;
  /** Where batches are masked and sealed: prepare threads (prepare-threads.ts), or this thread when absent. */
  preparer?: BatchPreparer | undefined;
  /**
   * The queue's MaximumMessageSize (queueLimits): a receive reserves room for ten bodies of at most this size, or of
   * 256 KiB when larger or unknown. Absent: 256 KiB.
   */
  maxMessageBytes?: number | undefined;
  /** "DATABASE_URL at db:5432/app", "QUEUE_URL at …": named when a drain gives up on one of them. */
  targets?: { postgres: string; sqs: string } | undefined;
  /** How often the `progress` line is considered, and the heartbeat of an idle one (observer.ts has the defaults). */
  progressLog?: ProgressLogTiming | undefined;
}

/** SQS's classic largest message, which a receive assumes of bodies it has not seen unless the queue allows less. */
const CLASSIC_MAX_MESSAGE_BYTES = 256 * 1024;

/** The body size a receive reserves ten of before any larger body has been seen. */
export function receiveReservationFloor(maxMessageBytes: number | undefined): number {
  return Math.min(CLASSIC_MAX_MESSAGE_BYTES, Math.max(1024, maxMessageBytes ?? CLASSIC_MAX_MESSAGE_BYTES));
}

/**
 * How many receives MASQ_MAX_IN_FLIGHT_BYTES lets run at once while nothing larger than the floor has arrived: each
 * reserves ten bodies of the floor's size. With SQS 20 ms away a receive takes at least that long, so at most
 * slots × 10 messages arrive per round trip: 12 slots (32 MiB, 256 KiB) cap a run near 4,500 messages a second (the
 * default budget grows with the receivers so that each has a slot: settings/config.ts).
 */
export function receiveSlots(maxInFlightBytes: number, maxMessageBytes: number | undefined): number {
  return Math.max(1, Math.floor(maxInFlightBytes / (10 * receiveReservationFloor(maxMessageBytes))));
}

export interface RunResult {
  stats: RunStats;
  /** Set when masq stopped on a broken invariant; nothing uncommitted was deleted. */
  fatal?: FatalError;
  /** True when shutdown ran past its deadline; what was held will be redelivered. */
  timedOut: boolean;
}

interface Held {
  receiptHandle: string;
  /** The body's size in UTF-8, counted against MASQ_MAX_IN_FLIGHT_BYTES until the message is deleted. */
  bytes: number;
  /** When the message becomes visible again unless extended (ms since epoch). */
  visibleAt: number;
}

/**
 * Wires source → prepare → sink and owns flow control. Receivers long-poll and hand messages to the current batch;
 * full (or timed-out) batches go to a bounded set of writers; committed batches are deleted from the queue.
 *
 * Invariants:
 *  - a message is deleted only after the statement that recorded it has committed: a crash in between redelivers
 *    it, and the ingest ledger turns the redelivery into a no-op;
 *  - `held` counts every message between receive and delete; receivers wait while it is at MASQ_MAX_IN_FLIGHT or
 *    while Postgres is failing, so memory is bounded and nothing is received that cannot be written;
 *  - held bodies stay under MASQ_MAX_IN_FLIGHT_BYTES: a receive starts only when the bytes held plus a reservation
 *    for every receive under way (10 × the largest body seen, at least 10 × 256 KiB, or 10 × the queue's
 *    MaximumMessageSize when that is smaller) fit, or when nothing at all is held or being received. Only receives
 *    already under way when a body larger than any before arrives can pass the cap, by at most 10 × (1 MiB − the floor)
 *    each, and only once (a queue whose MaximumMessageSize was lowered while larger messages were still in it, or
 *    raised while masq runs: operations.md, "Many receivers", says to lower it only once none is left). The
 *    reservation also bounds how many receives run at once: `receiveSlots` below, which run.ts warns about when it
 *    is fewer than the receivers;
 *  - visibility of held messages is extended before it lapses, so a slow commit does not cause redeliveries.
 */
export class Runner {
  readonly stats: RunStats = emptyStats();
  private readonly deps: RunnerDeps;
  private readonly held = new Map<string, Held>();
  private heldBytes = 0;
  /** Receives under way; each reserves 10 × largestBody (receiveReservationFloor at least, SQS's 1 MiB at most). */
  private receiving = 0;
  private largestBody: number;
  private pending: IncomingMessage[] = [];
  private batchTimer: NodeJS.Timeout | undefined;
  private readonly writeQueue: IncomingMessage[][] = [];
  private activeWriters = 0;
  private sinkHealthy = true;
  private stopping = false;
  private fatal: FatalError | undefined;
  private drain = false;
  /** The count of queue depth under way, shared by every receiver that found the queue empty. */
  private drainCheck: Promise<void> | undefined;
  /**
   * A drain short-polls (WaitTimeSeconds 0) until SQS still counts messages after every receiver found none (in
   * flight elsewhere, delayed, or missed by short polling's sampling); then it long-polls for them. A receive left
   * waiting on the server would be handed messages sent after the drain, invisible for their visibility timeout.
   */
  private drainLongPolls = false;
  /** Receives that brought messages, counted; a counter rather than a time, which two receives can share. */
  private receivesWithMessages = 0;
  /** Per receiver: receivesWithMessages when its last empty receive came back (absent: none yet). */
  private readonly emptyAfter: number[] = [];
  /** Wakes receivers backing off when a stop begins. */
  private readonly stopAbort = new AbortController();
  /** Aborts long polls on a fatal error or at the deadline; a graceful stop lets them finish (see stop()). */
  private readonly receiveAbort = new AbortController();
  /** Aborts everything (writes, deletes) at the shutdown deadline. */
  private readonly hardAbort = new AbortController();
  private deadline: NodeJS.Timeout | undefined;
  private waiters: (() => void)[] = [];
  private warnedNoSentTimestamp = false;
  private readonly observe: PipelineObserver | undefined;

  constructor(deps: RunnerDeps) {
    this.deps = deps;
    this.largestBody = receiveReservationFloor(deps.maxMessageBytes);
    this.observe = deps.observer;
    this.hardAbort.signal.addEventListener("abort", () => {
      this.receiveAbort.abort();
      this.notify();
    });
  }

  /** Messages received and not yet deleted. */
  get inFlight(): number {
    return this.held.size;
  }

  /** Runs until stop(), a fatal error, or (drain) an empty queue with everything committed and deleted. */
  async run(opts: { drain?: boolean } = {}): Promise<RunResult> {
    this.drain = opts.drain ?? false;
    const { config, logger } = this.deps;
    logger.info(
      { drain: this.drain, receivers: config.receivers, batchSize: config.batchSize, writers: config.writers, prepareThreads: config.prepareThreads ?? 0 },
      "pipeline started",
    );
    // A prepare thread or the SQS thread that dies is a crash of masq, not a pipeline running on without it.
    let running = true;
    void this.deps.preparer?.failure?.then((err) => running && this.failWith(err));
    void this.deps.source.failure?.then((err) => running && this.failWith(err));
    // Ticks every quarter of the timeout and extends what has less than half left: a message is always extended at
    // least a quarter of the timeout before it would reappear, whatever the timer's phase.
    const heartbeat = setInterval(() => void this.extendVisibility(), Math.max(250, (config.visibilityTimeoutSeconds * 1000) / 4));
    const progressLog = createProgressLog({ ...this.stats, inFlight: this.held.size }, this.deps.progressLog);
    const progress = setInterval(() => {
      const line = progressLog({ ...this.stats, inFlight: this.held.size });
      if (line) logger.info(line, "progress");
    }, this.deps.progressLog?.everyMs ?? PROGRESS_EVERY_MS);
    const receivers = Array.from({ length: config.receivers }, (_, i) => this.receiveLoop(i));
    await Promise.all(receivers);
    // Receivers have stopped: commit what is held and delete it, within the shutdown deadline set by stop().
    this.flush();
    await this.until(() => this.idle() || this.hardAbort.signal.aborted);
    clearTimeout(this.deadline);
    clearInterval(heartbeat);
    clearInterval(progress);
    const timedOut = !this.idle();
    if (timedOut) logger.warn({ held: this.held.size }, "shutdown deadline passed; held messages will be redelivered");
    running = false;
    logger.info({ ...this.stats }, "pipeline stopped");
    return { stats: this.stats, timedOut, ...(this.fatal ? { fatal: this.fatal } : {}) };
  }

  /**
   * Graceful stop: no new receives; what is held is committed and deleted within the shutdown deadline, which starts
   * now. Long polls in flight are left to finish, not aborted: SQS may already have handed them messages, which an
   * aborted request would strand, invisible until their visibility timeout. What they bring is given back (receiveLoop).
   */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.stopAbort.abort();
    this.deadline = setTimeout(() => this.hardAbort.abort(), this.deps.config.shutdownTimeoutMs);
    this.flush();
    this.notify();
  }

  private idle(): boolean {
    return this.pending.length === 0 && this.writeQueue.length === 0 && this.activeWriters === 0 && (this.held.size === 0 || this.fatal !== undefined);
  }

  private async receiveLoop(index: number): Promise<void> {
    const { source, config, logger } = this.deps;
    let failures = 0;
    let failingSince: number | undefined;
    const mayReceive = () => this.stopping || (this.sinkHealthy && this.held.size + 10 <= config.maxInFlight && this.bytesAllowReceive());
    while (!this.stopping) {
      await this.until(mayReceive);
      if (this.stopping) break;
      // Checked again where the reservation is taken: other receivers woken with this one (every one of them at
      // start) may have taken the room while it waited for its turn to resume.
      if (!mayReceive()) continue;
      let messages: ReceivedMessage[];
      this.receiving++;
      try {
        messages = await source.receiveBatch({
          waitTimeSeconds: this.drain && !this.drainLongPolls ? 0 : config.waitTimeSeconds,
          visibilityTimeoutSeconds: config.visibilityTimeoutSeconds,
          signal: this.receiveAbort.signal,
        });
        failures = 0;
        failingSince = undefined;
      } catch (err) {
        this.received();
        if (this.stopping) break;
        if (!(err instanceof TransientError)) {
          // A setting that turned out wrong mid-run (the queue was deleted, access revoked): no retry can help.
          this.failWith(err instanceof FatalError ? err : err instanceof ConfigError ? stoppedWorking(err) : new FatalError((err as Error).message));
          break;
        }
        if (this.gaveUp(err, "receiving from SQS", (failingSince ??= Date.now()), this.deps.targets?.sqs, true)) break;
        this.countRetry("sqs_receive");
        const delay = backoffMs(failures++);
        logger.warn({ err: describeError(err), retryInMs: Math.round(delay) }, "receive failed; retrying");
        await sleep(delay, this.stopAbort.signal);
        continue;
      }
      if (this.stopping) {
        this.received();
        await this.giveBack(messages);
        break;
      }
      if (messages.length > 0) {
        this.receivesWithMessages++;
        this.drainLongPolls = false;
      } else this.emptyAfter[index] = this.receivesWithMessages;
      this.accept(messages);
      this.received();
      if (messages.length === 0) {
        if (this.drain) await this.drainTail(index);
        continue;
      }
      this.observe?.received(messages.length, oldestSentAt(messages));
      this.observe?.inFlight(this.held.size);
    }
  }

  private bytesAllowReceive(): boolean {
    if (this.heldBytes === 0 && this.receiving === 0) return true;
    return this.heldBytes + (this.receiving + 1) * 10 * this.largestBody <= this.deps.config.maxInFlightBytes;
  }

  /** A receive ended: its reservation is released (what it brought is in heldBytes now). */
  private received(): void {
    this.receiving--;
    this.notify();
  }

  private release(messageId: string): void {
    const h = this.held.get(messageId);
    if (h === undefined) return;
    this.heldBytes -= h.bytes;
    this.held.delete(messageId);
  }

  /** Messages received after the stop began go back to the queue at once (visibility 0), for the next consumer. */
  private async giveBack(messages: ReceivedMessage[]): Promise<void> {
    const handles: Handle[] = [];
    for (const m of messages) {
      const known = this.held.get(m.messageId);
      // One we still hold (its visibility lapsed): keep it, with the newest receipt handle, which is the one that deletes.
      if (known !== undefined) known.receiptHandle = m.receiptHandle;
      else handles.push({ messageId: m.messageId, receiptHandle: m.receiptHandle });
    }
    if (handles.length === 0) return;
    const { failed } = await this.deps.source.extendVisibility(handles, 0, this.hardAbort.signal);
    this.stats.givenBack += handles.length - failed;
    if (failed > 0) this.deps.logger.warn({ failed }, "could not give back messages received during the stop; they reappear after their visibility timeout");
  }

  private accept(messages: ReceivedMessage[]): void {
    if (messages.length === 0) return;
    const { config } = this.deps;
    const visibleAt = Date.now() + config.visibilityTimeoutSeconds * 1000;
    for (const m of messages) {
      this.stats.received++;
      const known = this.held.get(m.messageId);
      if (known !== undefined) {
        // Redelivered while we still hold it (its visibility lapsed): the newest receipt handle is the one that deletes.
        known.receiptHandle = m.receiptHandle;
        known.visibleAt = visibleAt;
        continue;
      }
      const bytes = Buffer.byteLength(m.body, "utf8");
      if (bytes > this.largestBody) this.largestBody = Math.min(bytes, 1024 * 1024);
      this.heldBytes += bytes;
      this.held.set(m.messageId, { receiptHandle: m.receiptHandle, visibleAt, bytes });
      if (m.sentAt === null && !this.warnedNoSentTimestamp) {
        this.warnedNoSentTimestamp = true;
        this.deps.logger.warn("the SQS endpoint does not report SentTimestamp; create_date falls back to the receive date");
      }
      // Masked at commit time, with the pseudonym key active then (commitMessages). The message itself, not a
      // copy: an IncomingMessage is the part of it that prepare reads (its receipt handle is taken from `held`).
      this.pending.push(m);
    }
    if (this.pending.length >= config.batchSize) this.flush();
    else if (this.batchTimer === undefined && this.pending.length > 0) {
      this.batchTimer = setTimeout(() => this.flush(), config.batchWaitMs);
    }
  }

  private flush(): void {
    clearTimeout(this.batchTimer);
    this.batchTimer = undefined;
    const { batchSize } = this.deps.config;
    while (this.pending.length > 0) this.writeQueue.push(this.pending.splice(0, batchSize));
    this.pump();
  }

  private pump(): void {
    while (this.activeWriters < this.deps.config.writers && this.writeQueue.length > 0 && this.fatal === undefined) {
      const batch = this.writeQueue.shift()!;
      this.activeWriters++;
      void this.commitAndDelete(batch).finally(() => {
        this.activeWriters--;
        this.pump();
        this.notify();
      });
    }
    if (this.fatal !== undefined) this.writeQueue.length = 0;
  }

  private async commitAndDelete(batch: IncomingMessage[]): Promise<void> {
    const { pool, table, keys, logger, preparer, contract } = this.deps;
    const started = performance.now();
    let failingSince: number | undefined;
    for (let attempt = 0; ; attempt++) {
      if (this.hardAbort.signal.aborted || this.fatal !== undefined) return;
      try {
        const r: CommitResult & { writtenByEvent?: Record<string, number> } =
          contract === undefined
            ? await commitMessages(pool, table, keys, batch, this.hardAbort.signal, preparer)
            : await contract.commit(pool, keys, batch, this.hardAbort.signal);
        this.stats.written += r.written;
        if (r.writtenByEvent !== undefined) {
          const by = (this.stats.writtenByEvent ??= {});
          for (const [event, n] of Object.entries(r.writtenByEvent)) by[event] = (by[event] ?? 0) + n;
        }
        this.stats.duplicates += r.duplicates;
        for (const [reason, n] of Object.entries(r.quarantinedByReason) as [ReasonCode, number][]) {
          this.stats.quarantined[reason] = (this.stats.quarantined[reason] ?? 0) + n;
        }
        if (r.rejected > 0) logger.warn({ rejected: r.rejected }, "Postgres rejected rows; they were quarantined as db_rejected");
        this.stats.batches++;
        if (this.observe) {
          this.observe.committed({
            size: batch.length,
            seconds: (performance.now() - started) / 1000,
            written: r.written,
            ...(r.writtenByEvent !== undefined ? { writtenByEvent: r.writtenByEvent } : {}),
            duplicates: r.duplicates,
            quarantinedByReason: r.quarantinedByReason,
            lagSeconds: lagSeconds(batch, Date.now()),
          });
        }
        if (!this.sinkHealthy) logger.info("Postgres is back; resuming");
        this.sinkHealthy = true;
        this.notify();
        logger.debug({ size: batch.length, ...r, ms: Math.round(performance.now() - started) }, "batch committed");
        break;
      } catch (err) {
        if (!(err instanceof TransientError)) {
          // Only a transient error earns a retry; anything else is a broken invariant (or a bug): stop loudly.
          this.failWith(err instanceof FatalError ? err : new FatalError(`unexpected error while committing: ${describeError(err)}`));
          return;
        }
        // SQS still answers: the receives under way (a drain's, short or MASQ_WAIT_TIME_SECONDS at most) may finish
        // and give back what they bring, rather than leave it invisible for the next run.
        if (this.gaveUp(err, "committing to Postgres", (failingSince ??= Date.now()), this.deps.targets?.postgres, false)) return;
        const cause = err.cause_;
        this.countRetry(cause);
        // Stop receiving until Postgres answers again; held messages keep their visibility extended meanwhile.
        this.sinkHealthy = false;
        const delay = backoffMs(attempt, 250, 15_000);
        logger.warn({ err: describeError(err), attempt, retryInMs: Math.round(delay) }, "commit failed; retrying");
        await sleep(delay, this.hardAbort.signal);
      }
    }
    await this.deleteCommitted(batch.map((o) => o.messageId));
  }

  /** Deletes only what has committed. A delete that keeps failing is harmless: redelivery meets the ledger. */
  private async deleteCommitted(ids: string[]): Promise<void> {
    const { source, logger } = this.deps;
    let remaining = ids;
    for (let attempt = 0; remaining.length > 0; attempt++) {
      const handles: Handle[] = [];
      for (const id of remaining) {
        const h = this.held.get(id);
        if (h !== undefined) handles.push({ messageId: id, receiptHandle: h.receiptHandle });
      }
      let retry: Handle[];
      try {
        const res = await source.deleteBatch(handles, this.hardAbort.signal);
        retry = res.retry;
        this.stats.staleHandles += res.stale;
        this.stats.deleted += handles.length - res.retry.length - res.stale;
        this.observe?.deleted(handles.length - res.retry.length - res.stale);
      } catch (err) {
        // Fatal (the queue vanished, access revoked): committed rows stay committed; the messages come back and dedupe.
        logger.error({ err: describeError(err) }, "delete failed; committed messages will be redelivered and skipped");
        this.stats.deleteAbandoned += handles.length;
        retry = [];
      }
      const retryIds = new Set(retry.map((h) => h.messageId));
      for (const h of handles) if (!retryIds.has(h.messageId)) this.release(h.messageId);
      this.observe?.inFlight(this.held.size);
      this.notify();
      remaining = [...retryIds];
      if (remaining.length === 0 || this.hardAbort.signal.aborted) break;
      this.countRetry("sqs_delete");
      await sleep(backoffMs(attempt), this.hardAbort.signal);
    }
    this.stats.deleteAbandoned += remaining.length;
    for (const id of remaining) this.release(id);
  }

  private async extendVisibility(): Promise<void> {
    const { source, config, logger } = this.deps;
    const now = Date.now();
    const margin = (config.visibilityTimeoutSeconds * 1000) / 2;
    const due: Handle[] = [];
    for (const [messageId, h] of this.held) {
      if (h.visibleAt - now < margin) {
        due.push({ messageId, receiptHandle: h.receiptHandle });
        h.visibleAt = now + config.visibilityTimeoutSeconds * 1000;
      }
    }
    if (due.length === 0) return;
    const { failed } = await source.extendVisibility(due, config.visibilityTimeoutSeconds, this.hardAbort.signal);
    this.stats.visibilityExtended += due.length - failed;
    this.observe?.visibilityExtended(due.length - failed);
    if (failed > 0) logger.warn({ failed, of: due.length }, "could not extend visibility; those messages may be redelivered (harmless)");
  }

  /**
   * A receiver found the queue empty during a drain. It waits, without polling, until every receiver has found it
   * empty since the last message and everything held is committed and deleted (or a message arrives, or the stop
   * begins), then asks SQS for the queue's depth, once for all of them.
   */
  private async drainTail(index: number): Promise<void> {
    const seen = this.emptyAfter[index];
    const arrived = () => this.receivesWithMessages !== seen;
    await this.until(() => this.stopping || arrived() || (this.allReceiversEmpty() && this.idle()));
    if (this.stopping || arrived()) return;
    this.drainCheck ??= this.checkDrained().finally(() => (this.drainCheck = undefined));
    await this.drainCheck;
  }

  private allReceiversEmpty(): boolean {
    for (let i = 0; i < this.deps.config.receivers; i++) if (this.emptyAfter[i] !== this.receivesWithMessages) return false;
    return true;
  }

  /**
   * Drain ends when every receiver has seen an empty poll since the last message, nothing is held, and SQS agrees.
   * Its receives are short polls by then (or long polls that stop() lets finish), so none is left on the server
   * that could take a message sent after the drain; what one still brings is given back (receiveLoop).
   */
  private async checkDrained(): Promise<void> {
    const { source, logger, config } = this.deps;
    try {
      const c = await source.counts(this.stopAbort.signal);
      if (c.visible + c.inFlight + c.delayed === 0 && this.held.size === 0) {
        logger.info("queue is empty and everything received is committed and deleted");
        this.stop();
        return;
      }
      if (c.visible === 0 && c.inFlight + c.delayed > 0) logger.debug({ ...c }, "drain: waiting for messages in flight elsewhere or delayed");
      this.drainLongPolls = true;
    } catch (err) {
      if (err instanceof FatalError) this.failWith(err);
      else {
        logger.warn({ err: describeError(err) }, "drain: could not read queue counts");
        await sleep(config.waitTimeSeconds * 1000, this.stopAbort.signal);
      }
    }
  }

  /**
   * A drain is a one-shot job: past config.giveUpAfterMs (MASQ_CONNECT_TIMEOUT_SECONDS) of transient failures in a
   * row it stops, naming what it could not reach, instead of waiting forever. The service has no such limit.
   */
  private gaveUp(err: unknown, what: string, since: number, target: string | undefined, abortReceives: boolean): boolean {
    const limit = this.deps.config.giveUpAfterMs;
    if (limit === undefined || Date.now() - since < limit) return false;
    const seconds = Math.round(limit / 1000);
    const help = err instanceof TransientError ? err.help : {};
    const e = new UnreachableError(`${what}: gave up after ${seconds} s`, {
      what: help.what === undefined ? `gave up ${what} after ${seconds} s` : `${help.what} within ${seconds} s`,
      object: target ?? help.object,
      hint: `${help.hint ?? (err as Error).message}; uncommitted messages will be redelivered (MASQ_CONNECT_TIMEOUT_SECONDS sets the wait)`,
    });
    e.cause = err;
    this.failWith(e, abortReceives);
    return true;
  }

  private failWith(err: FatalError, abortReceives = true): void {
    if (this.fatal === undefined) {
      this.fatal = err;
      this.deps.logger.error({ err: err.message }, "stopping: this needs an operator; nothing uncommitted was deleted");
    }
    // Nothing is worth waiting for now; what aborted polls had taken comes back after its visibility timeout.
    if (abortReceives) this.receiveAbort.abort();
    this.stop();
  }

  private countRetry(cause: string): void {
    this.stats.retries[cause] = (this.stats.retries[cause] ?? 0) + 1;
    this.observe?.retried(cause);
  }

  private notify(): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  /** Waits, without polling, until the condition holds; re-checked whenever state changes. */
  private async until(cond: () => boolean): Promise<void> {
    while (!cond()) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }
}

/** Seconds from each message's SentTimestamp to now (messages without one are left out). */
function lagSeconds(batch: readonly IncomingMessage[], now: number): number[] {
  const lags: number[] = [];
  for (const m of batch) if (m.sentAt !== null) lags.push((now - m.sentAt.getTime()) / 1000);
  return lags;
}

function oldestSentAt(messages: readonly ReceivedMessage[]): Date | null {
  let oldest: Date | null = null;
  for (const m of messages) if (m.sentAt !== null && (oldest === null || m.sentAt < oldest)) oldest = m.sentAt;
  return oldest;
}
