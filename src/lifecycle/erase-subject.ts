import { sql, type RawBuilder } from "kysely";
import type pg from "pg";
import { type Blocker, watchedQuery } from "../db/lock-watch.ts";
import { inTransaction } from "../db/pool.ts";
import { classified } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";
import { registeredTables } from "../db/registered-tables.ts";
import { qualified, type TableName } from "../db/tables.ts";
import { TransientError } from "../errors.ts";
import { openAuditKey, subjectFingerprint, type AuditKey } from "../keys/audit-key.ts";
import { readTable } from "../settings/config.ts";
import { sealAudit } from "./audit.ts";
import type { Lifecycle } from "./audited-command.ts";
import { withRotationLock } from "./rotation-state.ts";

/**
 * `masq subject erase`: a user's rows, quarantine records and private vault values deleted in audited, resumable
 * batches (or previewed); and the batch loop and epoch-lock retry that every deleter of vault values uses.
 */

/** What an erasure deleted (or, dry, would delete). */
export interface ErasureCounts {
  rows: number;
  quarantine: number;
  /** --vault-only: encrypted originals of the user's quarantine records dropped (the records stay). */
  originals: number;
  vault: number;
}

export interface ErasureRequest {
  table: TableName;
  userId: string;
  /** subjectFingerprint(auditKey, userId): how the trail names the user. */
  fingerprint: string;
  vaultOnly: boolean;
  /**
   * The command erases the user from every registered table (it names none), one erasure per table: with
   * --vault-only, the user's rows of the other tables then keep no value either (masq.erasures.every_table).
   */
  everyTable: boolean;
  reason: string;
  client: Record<string, unknown>;
}

/** Values per batch: a batch is one transaction, short enough not to hold ingestion up noticeably. */
export const ERASE_BATCH = 2000;

const num = (v: unknown) => Number(v ?? 0);

/** The arguments masq.audit_subject_erase and its preview take, in their order: one list for both. */
function erasureArgs(key: AuditKey, req: ErasureRequest): RawBuilder<unknown> {
  return sql`${req.reason}, ${JSON.stringify(req.client)}, ${req.fingerprint}, ${qualified(req.table)}, ${req.userId}, ${req.vaultOnly}, ${req.everyTable}, ${key.version}`;
}

/**
 * --dry-run: the counts, changing nothing but the trail: the preview is an audit row (phase `preview`, the user's
 * fingerprint and the counts), sealed and committed with them (masq.audit_subject_erase_preview), because the counts
 * tell whether a user exists and how much of them there is. Unbounded (every value of the user is checked), so only
 * a dry run asks for it; an erasure reports what each batch deleted.
 */
export async function previewErasure(pool: pg.Pool, key: AuditKey, req: ErasureRequest): Promise<ErasureCounts & { seq: string }> {
  return inTransaction(pool, async (c) => {
    const r = (
      await classified(sql<Record<string, unknown>>`SELECT seq::text AS seq, rows, quarantine, originals, vault FROM masq.audit_subject_erase_preview(${erasureArgs(key, req)})`.execute(masqQueries(c)))
    ).rows[0]!;
    await sealAudit(c, key, String(r.seq));
    return { seq: String(r.seq), rows: num(r.rows), quarantine: num(r.quarantine), originals: num(r.originals), vault: num(r.vault) };
  });
}

/**
 * The whole erasure, in the order that makes the trail exact and the work resumable:
 *   1. the intent row (who, when, why, the user's fingerprint, the mode), sealed and COMMITTED before anything is
 *      deleted: the database deletes only for an erasure such a row started (masq.audit_subject_erase);
 *   2. bounded batches, each its own transaction (masq.erase_subject_batch), until one finds nothing left;
 *   3. the row of what was deleted, with the counts the server kept (masq.audit_subject_erased), sealed.
 * Killed anywhere, a rerun for the same user starts again at 1, takes over the unfinished erasure's counts and names
 * it (selector.resumes).
 */
export async function eraseSubject(
  pool: pg.Pool,
  key: AuditKey,
  req: ErasureRequest,
  onBatch: (done: ErasureCounts) => void,
  signal?: AbortSignal,
  onBlockerEnded?: (b: Blocker, what: string) => void,
): Promise<ErasureCounts & { startSeq: string; doneSeq: string }> {
  const startSeq = await inTransaction(pool, async (c) => {
    const seq = (await classified(sql<{ seq: string }>`SELECT masq.audit_subject_erase(${erasureArgs(key, req)})::text AS seq`.execute(masqQueries(c)))).rows[0]!.seq;
    await sealAudit(c, key, seq);
    return seq;
  });
  await deleteInBatches(
    pool,
    sql<ErasureCounts & { done: boolean }>`SELECT rows, quarantine, originals, vault, done FROM masq.erase_subject_batch(${startSeq}, ${ERASE_BATCH})`,
    (b) => onBatch({ rows: b.rows, quarantine: b.quarantine, originals: b.originals, vault: b.vault }),
    signal,
    onBlockerEnded,
  );
  return inTransaction(pool, async (c) => {
    const r = (
      await classified(
        sql<Record<string, unknown>>`SELECT seq::text AS seq, rows, quarantine, originals, vault
          FROM masq.audit_subject_erased(${startSeq}, ${JSON.stringify(req.client)}, ${key.version})`.execute(masqQueries(c)),
      )
    ).rows[0]!;
    await sealAudit(c, key, String(r.seq));
    return { startSeq, doneSeq: String(r.seq), rows: num(r.rows), quarantine: num(r.quarantine), originals: num(r.originals), vault: num(r.vault) };
  });
}

/** What `masq subject erase` asks: whose data, from the one table named or (undefined) every registered one, and how. */
export interface EraseUserRequest {
  userId: string;
  named: TableName | undefined;
  vaultOnly: boolean;
  dryRun: boolean;
  reason: string;
}

/** What the command is told as the erasure goes, table by table, to print it. */
export interface EraseUserReport {
  previewed: (table: TableName, counts: ErasureCounts & { seq: string }) => void;
  /** A table's erasure begins; the function returned is called after each committed batch. */
  erasing: (table: TableName) => (batch: ErasureCounts) => void;
  erased: (table: TableName, counts: ErasureCounts & { startSeq: string; doneSeq: string }, fingerprint: string) => void;
  blockerEnded: (blocker: Blocker, what: string) => void;
}

/**
 * `masq subject erase`: the user erased from every registered table (or the one named), one erasure per table,
 * each audited before and after, under the rotation lock (a rotation rewrites the pseudonyms an erasure looks for);
 * a dry run previews each table instead, changing nothing but the trail. The trail and the report name the user by
 * a keyed fingerprint, never by the id. Returns how many rows, records and values were deleted in all.
 */
export async function eraseUser(lc: Lifecycle, req: EraseUserRequest, report: EraseUserReport): Promise<number> {
  const pool = lc.db.pool;
  // Every registered table unless the command names one: the user is erased wherever masq wrote them.
  const tables = req.named !== undefined ? [req.named] : await registeredTables(pool);
  if (tables.length === 0) tables.push(readTable({ flags: {}, env: {} }));
  const each = async (fn: (key: AuditKey, r: ErasureRequest) => Promise<number>): Promise<number> => {
    const key = await openAuditKey(pool, lc.keys());
    try {
      const base = { userId: req.userId, fingerprint: subjectFingerprint(key, req.userId), vaultOnly: req.vaultOnly, everyTable: req.named === undefined, reason: req.reason, client: await lc.client() };
      let total = 0;
      for (const table of tables) total += await fn(key, { ...base, table });
      return total;
    } finally {
      key.key.fill(0);
    }
  };
  if (req.dryRun) {
    return each(async (key, r) => {
      report.previewed(r.table, await previewErasure(pool, key, r));
      return 0;
    });
  }
  return withRotationLock(pool, () =>
    each(async (key, r) => {
      // No preview first (it is unbounded): the report counts what the batches delete.
      const done = await eraseSubject(pool, key, r, report.erasing(r.table), undefined, report.blockerEnded);
      report.erased(r.table, done, r.fingerprint);
      return done.rows + done.quarantine + done.originals + done.vault;
    }),
  );
}

// Deleting vault values while ingestion runs: shared by erasure and retention.

/**
 * How anything that deletes vault values (subject erasure, retention) stays exact while ingestion runs
 * (101_keys_and_vault.sql, "the vault epoch"). Each batch is ONE statement calling a SECURITY DEFINER function that
 *   1. first runs `PERFORM masq.advance_vault_epoch()`: it waits for the ingest batches in flight to commit, and
 *      every later one waits for this transaction (and then, if it left values out, is refused and sealed whole);
 *   2. then deletes at most a bounded number of things, each in a later statement of the function (plpgsql takes a
 *      new READ COMMITTED snapshot per statement, which sees every committed row): a value is deleted only when no row
 *      and no quarantine record uses it;
 *   3. returns one row with a boolean `done` (nothing was left to delete) and its counts.
 * Each call is its own transaction (autocommit), so a kill loses at most the batch in flight and a rerun continues,
 * and no transaction stays open between two statements. This function runs such a statement until it reports done,
 * handing each batch's row to `onBatch`.
 */
export async function deleteInBatches<R extends { done: boolean }>(
  pool: pg.Pool,
  statement: RawBuilder<R>,
  onBatch: (row: R) => void,
  signal?: AbortSignal,
  onBlockerEnded?: (b: Blocker, what: string) => void,
): Promise<void> {
  const compiled = statement.compile(masqQueries(pool));
  for (;;) {
    signal?.throwIfAborted();
    const row = await retryEpochLock(
      async () => (await watchedQuery<R>(pool, { what: DELETER_WAITS, onEnded: onBlockerEnded }, compiled.sql, [...compiled.parameters], DELETER_STATEMENT_MS)).rows[0],
      signal,
    );
    if (row === undefined) return;
    onBatch(row);
    if (row.done) return;
  }
}

/**
 * How long one deleting batch may run, holding the vault epoch against ingestion: ingestion waits for a deleter that
 * is still working (104_lifecycle.sql) up to 60 s before its batch fails and is retried, so a batch must end well within
 * that. A batch that runs out fails the command (run it again: it goes on where it stopped).
 */
export const DELETER_STATEMENT_MS = 30_000;

/** What a deleting statement waits for: the vault epoch first, then the rows it deletes. */
export const DELETER_WAITS = "the vault epoch or a record being deleted";

/** lock_not_available: the deleter's bounded wait for the vault epoch (104_lifecycle.sql, lock_timeout) ran out. */
const LOCK_TIMEOUT = "pg_55P03";

/** How often, and after what pauses, a deleter asks for the vault epoch again: about 3 minutes in all. */
export const EPOCH_RETRY = { attempts: 30, firstPauseMs: 100, maxPauseMs: 5000 };

/**
 * Runs one deleting transaction, again after a pause when its wait for the vault epoch timed out. The pause lets the
 * ingest batches that queued behind the deleter through (they wait while it waits): ingestion is held up for at most
 * one lock_timeout at a time. What keeps the epoch locked for minutes is a transaction left open (an idle ingest or
 * replay session): the error then says so.
 */
export async function retryEpochLock<T>(fn: () => Promise<T>, signal?: AbortSignal, retry = EPOCH_RETRY): Promise<T> {
  let pause = retry.firstPauseMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof TransientError) || err.cause_ !== LOCK_TIMEOUT) throw err;
      if (attempt >= retry.attempts) {
        // Already told as who holds the lock (lock-watch.ts): that says more than the epoch's name.
        if (err.help.what?.includes(" is held by ")) throw err;
        throw new TransientError(err.message, LOCK_TIMEOUT, {
          what: "the vault epoch stayed locked",
          object: "masq.vault_epoch",
          hint:
            "a transaction that took it is still open (pg_stat_activity: state 'idle in transaction'; pg_blocking_pids()); masq ends only sessions " +
            "of masq roles (SECURITY.md, \"Waits\"): end it and run this again: it goes on where it stopped",
        });
      }
    }
    signal?.throwIfAborted();
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, retry.maxPauseMs);
  }
}
