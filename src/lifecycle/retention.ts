import type pg from "pg";
import { withLockWatch, type Blocker, endedLine } from "../db/lock-watch.ts";
import { inTransaction } from "../db/pool.ts";
import { classified, classifyPgError } from "../db/query.ts";
import { qualified, type TableName } from "../db/tables.ts";
import { describeError } from "../errors.ts";
import { openAuditKey, type AuditKey } from "../keys/audit-key.ts";
import type { KeyProvider } from "../keys/key-provider.ts";
import type { Logger } from "../log.ts";
import { clientReported, sealAudit } from "./audit.ts";
import { DELETER_WAITS, retryEpochLock } from "./erase-subject.ts";

/** Where the vault pass goes on from: the last primary key (kind, pseudonym) a batch looked at. */
export interface PruneCursor {
  kind: string;
  pseudonym: string;
}

export interface PruneOptions {
  pool: pg.Pool;
  /** Not needed for a dry run. */
  provider?: KeyProvider;
  table: TableName;
  days: number;
  /** Count what would go; delete nothing, write no audit row, need no audit key. */
  dryRun?: boolean;
  /** Vault entries looked at, and quarantine records deleted, per transaction (at most 10,000). */
  batchSize?: number;
  /** Stop after this many transactions (a periodic prune's bound); `complete` then says false. */
  maxBatches?: number;
  /** Where the vault pass starts (a bounded run that stopped gives its `cursor`). */
  from?: PruneCursor;
  signal?: AbortSignal;
  /** Awaited between two transactions (a periodic prune pauses, to let ingestion's batches through). */
  betweenBatches?: () => Promise<void>;
  /** A batch ended a session of a masq role that held it up (SECURITY.md, "Waits"). */
  onBlockerEnded?: (b: Blocker, what: string) => void;
}

export interface PruneResult {
  vaultPruned: number;
  quarantinePruned: number;
  /** Vault entries looked at. */
  scanned: number;
  batches: number;
  /** Both passes reached their end; otherwise `cursor` is where the vault pass stopped. */
  complete: boolean;
  cursor: PruneCursor | undefined;
}

interface VaultBatch {
  scanned: number;
  pruned: number;
  seq: string | null;
  next_kind: string | null;
  next_pseudonym: string | null;
}

/**
 * Retention (docs/operations.md, "Retention"): deletes quarantine records older than `days` days and the vault
 * entries that no row of the target table from the last `days` days (and no quarantine record of that period) uses.
 * Each batch is a transaction of its own that the database decides and audits (104_lifecycle.sql): the functions pick
 * what may go, delete it and append an audit row naming it, which this process seals before COMMIT. So a kill
 * between batches loses nothing and leaves no deletion unaudited; running again continues.
 */
export async function pruneVault(o: PruneOptions): Promise<PruneResult> {
  const batchSize = o.batchSize ?? 1000;
  const result: PruneResult = { vaultPruned: 0, quarantinePruned: 0, scanned: 0, batches: 0, complete: false, cursor: o.from };
  const audit = o.dryRun === true || o.provider === undefined ? undefined : await openAudit(o.pool, o.provider, o.signal);
  const stopped = () => o.signal?.aborted === true;
  const next = async () => {
    if (result.batches > 0) await o.betweenBatches?.();
  };
  try {
    const budget = () => o.maxBatches === undefined || result.batches < o.maxBatches;
    // Quarantine first: it is the cheaper pass, and a bounded run should not spend its whole budget on the vault.
    if (audit === undefined) result.quarantinePruned = await countQuarantine(o.pool, o.days);
    else {
      while (budget() && !stopped()) {
        await next();
        if (stopped()) return result;
        const n = await pruneQuarantineBatch(o.pool, audit, o.days, batchSize);
        result.batches++;
        result.quarantinePruned += n;
        if (n < batchSize) break;
      }
      if (!budget()) return result;
    }
    while (budget() && !stopped()) {
      await next();
      if (stopped()) break;
      const b = await pruneVaultBatch(o.pool, audit, o, result.cursor, batchSize);
      result.batches++;
      result.scanned += b.scanned;
      result.vaultPruned += b.pruned;
      if (b.next_kind === null || b.next_pseudonym === null || b.scanned < batchSize) {
        result.cursor = undefined;
        result.complete = true;
        break;
      }
      result.cursor = { kind: b.next_kind, pseudonym: b.next_pseudonym };
    }
    return result;
  } finally {
    audit?.key.key.fill(0);
  }
}

async function openAudit(pool: pg.Pool, provider: KeyProvider, signal?: AbortSignal): Promise<{ key: AuditKey; client: string }> {
  const key = await openAuditKey(pool, provider, signal);
  return { key, client: JSON.stringify(await clientReported(provider)) };
}

async function pruneVaultBatch(
  pool: pg.Pool,
  audit: { key: AuditKey; client: string } | undefined,
  o: PruneOptions,
  after: PruneCursor | undefined,
  batchSize: number,
): Promise<VaultBatch> {
  const query = (db: pg.Pool | pg.PoolClient) =>
    db.query<VaultBatch>("SELECT scanned, pruned, seq::text AS seq, next_kind, next_pseudonym FROM masq.vault_prune_batch($1::regclass, $2, $3, $4, $5, $6, $7)", [
      qualified(o.table),
      o.days,
      after?.kind ?? null,
      after?.pseudonym ?? null,
      batchSize,
      audit?.client ?? "{}",
      audit?.key.version ?? null,
    ]);
  if (audit === undefined) return (await classified(query(pool))).rows[0]!;
  // One statement and the seal of its audit row: the transaction is open for two round trips, never longer.
  return retryEpochLock(
    () =>
      inTransaction(pool, async (c) => {
        const b = (await withLockWatch(pool, c, { what: DELETER_WAITS, onEnded: o.onBlockerEnded }, () => classified(query(c)))).rows[0]!;
        if (b.seq !== null) await sealAudit(c, audit.key, b.seq);
        return b;
      }),
    o.signal,
  );
}

async function pruneQuarantineBatch(pool: pg.Pool, audit: { key: AuditKey; client: string }, days: number, batchSize: number): Promise<number> {
  return inTransaction(pool, async (c) => {
    const r = await classified(
      c.query<{ pruned: number; seq: string | null }>("SELECT pruned, seq::text AS seq FROM masq.quarantine_prune_batch($1, $2, $3, $4)", [days, batchSize, audit.client, audit.key.version]),
    );
    const { pruned, seq } = r.rows[0]!;
    if (seq !== null) await sealAudit(c, audit.key, seq);
    return pruned;
  });
}

async function countQuarantine(pool: pg.Pool, days: number): Promise<number> {
  const r = await classified(pool.query<{ pruned: number }>("SELECT pruned FROM masq.quarantine_prune_batch($1, 1, '{}', NULL)", [days]));
  return r.rows[0]!.pruned;
}

export interface PeriodicPruneOptions {
  /** A pool of its own (three connections): the advisory lock is held on one for a whole run, never on ingestion's; one watches the deleter's lock waits (lock-watch.ts). */
  pool: pg.Pool;
  provider: KeyProvider;
  table: TableName;
  days: number;
  logger: Logger;
  /** Between runs that reached the end (default an hour). */
  intervalMs?: number;
  /** A run that stopped at its bound goes on after this (default a minute), from where it stopped. */
  continueMs?: number;
  /** Transactions per run (default 100), each of batchSize vault entries or quarantine records (default 1000). */
  maxBatches?: number;
  batchSize?: number;
  /** Between two transactions of a run (default 1 s): ingestion catches up between two epoch advances. */
  pauseMs?: number;
}

/** The advisory lock that makes one masq process of all replicas the one that prunes. */
const LOCK = "hashtext('masq.vault_prune')";

/**
 * `masq run` with MASQ_VAULT_RETENTION_DAYS: prunes at start and then hourly, in runs of a bounded number of small
 * transactions with a pause between them, so that ingestion (whose batches a deleting transaction holds back for its
 * duration, 104_lifecycle.sql) is never held up for more than one of them. Across replicas one process prunes at a time
 * (pg_try_advisory_lock; the others skip their turn). A failed run is logged and tried again at the next turn:
 * retention never stops ingestion.
 */
export function startPeriodicPrune(o: PeriodicPruneOptions): { stop(): Promise<void> } {
  const intervalMs = o.intervalMs ?? 3_600_000;
  const continueMs = o.continueMs ?? 60_000;
  const abort = new AbortController();
  let cursor: PruneCursor | undefined;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();

  const schedule = (ms: number) => {
    if (abort.signal.aborted) return;
    timer = setTimeout(() => {
      running = once().then(schedule);
    }, ms);
    timer.unref();
  };

  const once = async (): Promise<number> => {
    let lock: pg.PoolClient | undefined;
    try {
      lock = await o.pool.connect();
      const got = await lock.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(${LOCK}) AS ok`);
      if (got.rows[0]?.ok !== true) {
        o.logger.debug({}, "vault prune: another masq process is pruning; skipping this turn");
        return intervalMs;
      }
      try {
        const r = await pruneVault({
          pool: o.pool,
          provider: o.provider,
          table: o.table,
          days: o.days,
          batchSize: o.batchSize,
          maxBatches: o.maxBatches ?? 100,
          from: cursor,
          signal: abort.signal,
          betweenBatches: () => pause(o.pauseMs ?? 1000, abort.signal),
          onBlockerEnded: (b, what) => o.logger.warn({ pid: b.pid, login: b.login, lock: b.lock }, `vault prune: ${endedLine(b, what)}`),
        });
        cursor = r.cursor;
        o.logger.info(
          { retentionDays: o.days, vaultPruned: r.vaultPruned, quarantinePruned: r.quarantinePruned, scanned: r.scanned, batches: r.batches, complete: r.complete },
          `vault prune: ${r.vaultPruned} vault entries and ${r.quarantinePruned} quarantine records older than ${o.days} days deleted${r.complete ? "" : " (bounded run; continuing shortly)"}`,
        );
        return r.complete ? intervalMs : continueMs;
      } finally {
        await lock.query(`SELECT pg_advisory_unlock(${LOCK})`);
      }
    } catch (err) {
      if (!abort.signal.aborted) o.logger.warn({ err: describeError(classifyPgError(err)) }, "vault prune failed; will try again at the next turn");
      return intervalMs;
    } finally {
      lock?.release();
    }
  };

  schedule(0);
  return {
    async stop() {
      abort.abort();
      clearTimeout(timer);
      await running;
    },
  };
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });
}
