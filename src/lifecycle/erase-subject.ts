import type pg from "pg";
import { sealAudit } from "./seal-audit.ts";
import { query } from "../db/query.ts";
import { qualified, type TableName } from "../sink/table-name.ts";
import { inTransaction } from "../sink/transaction.ts";
import { deleteInBatches } from "./vault-deletion.ts";
import type { Blocker } from "../sink/lock-watch.ts";
import { readTable } from "../settings/config.ts";
import { registeredTables } from "../sink/registered-tables.ts";
import { openAuditKey, subjectFingerprint, type AuditKey } from "./audit-key.ts";
import type { Lifecycle } from "./audited-command.ts";
import { withRotationLock } from "./rotation-state.ts";

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
function erasureArgs(key: AuditKey, req: ErasureRequest): unknown[] {
  return [req.reason, JSON.stringify(req.client), req.fingerprint, qualified(req.table), req.userId, req.vaultOnly, req.everyTable, key.version];
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
      await query<Record<string, unknown>>(c, "SELECT seq::text AS seq, rows, quarantine, originals, vault FROM masq.audit_subject_erase_preview($1, $2, $3, $4, $5, $6, $7, $8)", erasureArgs(key, req))
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
    const seq = (
      await query<{ seq: string }>(c, "SELECT masq.audit_subject_erase($1, $2, $3, $4, $5, $6, $7, $8)::text AS seq", erasureArgs(key, req))
    ).rows[0]!.seq;
    await sealAudit(c, key, seq);
    return seq;
  });
  await deleteInBatches<ErasureCounts & { done: boolean }>(
    pool,
    { text: "SELECT rows, quarantine, originals, vault, done FROM masq.erase_subject_batch($1, $2)", values: [startSeq, ERASE_BATCH] },
    (b) => onBatch({ rows: b.rows, quarantine: b.quarantine, originals: b.originals, vault: b.vault }),
    signal,
    onBlockerEnded,
  );
  return inTransaction(pool, async (c) => {
    const r = (await query<Record<string, unknown>>(c, "SELECT seq::text AS seq, rows, quarantine, originals, vault FROM masq.audit_subject_erased($1, $2, $3)", [
      startSeq,
      JSON.stringify(req.client),
      key.version,
    ])).rows[0]!;
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
  if (tables.length === 0) tables.push(readTable({}, {}));
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
