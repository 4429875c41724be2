/**
 * A batch from masking to commit. commitMessages masks and seals it (on this thread or in prepare threads) with the
 * pseudonym key active at commit time; commitBatch writes it in statements of bounded size, and when the database
 * refuses a statement as a whole, splits it down to the refused messages and quarantines those.
 */
import type pg from "pg";
import type { TableName } from "../db/tables.ts";
import { DataError, type FatalError } from "../errors.ts";
import type { IngestKeys } from "../keys/ingest-keys.ts";
import { batchLength, emptyRowColumns, rowAt, sliceRows, type QuarantineRecord, type SealedBatch, type VaultEpochs, type IncomingMessage } from "./batch.ts";
import { prepareOutcome } from "./prepare.ts";
import { writeBatch, type BatchResult, type EncodedBatch, StaleKeyError, StaleVaultError } from "./write-batch.ts";

export interface CommitResult extends BatchResult {
  /** Rows the database refused on their own; they were quarantined as db_rejected instead. */
  rejected: number;
}

/**
 * A statement's parameters stay under about this many bytes as sent (bytea goes as hex, twice its size): a batch of
 * large quarantined bodies is written in several statements, so no string node-postgres builds approaches V8's
 * limit (~512 MiB) and the memory a write holds stays small. Ordinary rows are a few hundred bytes: a batch of them
 * is one statement.
 */
export const MAX_STATEMENT_BYTES = 8 * 1024 * 1024;

/**
 * A batch's messages are numbered rows first, then quarantine records: a range [from, to) of those numbers is a
 * part of the batch. Splitting works on ranges; only a part that is written is made (copied out of the columns).
 */
type Range = readonly [from: number, to: number];

/**
 * Commits a batch, in statements of at most MAX_STATEMENT_BYTES (one unless its quarantined bodies are large; each
 * is a transaction of its own, which the ledger makes safe: a crash between two redelivers the batch, and what the
 * first committed is skipped). When the database rejects a statement as a whole (a constraint or type the validator
 * did not foresee, or a value masq could not encode), splits it in halves until the offending rows are isolated,
 * quarantines those, and commits the rest. A poison row costs O(log n) extra statements, never a stuck pipeline.
 * Transient and fatal errors propagate.
 */
export async function commitBatch(pool: pg.Pool, table: TableName, batch: SealedBatch | FromThread): Promise<CommitResult> {
  if ("encoded" in batch) {
    // Encoded only when it fits one statement (prepare-worker.ts); split, it needs its columns back from the thread.
    try {
      return { ...(await writeBatch(pool, table, batch.encoded)), rejected: 0 };
    } catch (err) {
      if (!(err instanceof DataError)) throw err;
      return splitRejected(pool, table, await batch.sealed(), err);
    }
  }
  const parts = splitBySize(batch, MAX_STATEMENT_BYTES);
  if (parts.length === 1) return commitSplitting(pool, table, batch);
  let total: CommitResult = { written: 0, quarantined: 0, quarantinedByReason: {}, duplicates: 0, rejected: 0 };
  for (const range of parts) {
    const part = partOf(batch, range);
    total = sum(total, await commitSplitting(pool, table, { ...part, vault: vaultOf(batch, part) }));
  }
  return total;
}

/** A batch a prepare thread encoded, and the way to its columns (from the thread, which keeps them until settled). */
export interface FromThread {
  encoded: EncodedBatch;
  sealed(): Promise<SealedBatch>;
}

async function commitSplitting(pool: pg.Pool, table: TableName, batch: SealedBatch): Promise<CommitResult> {
  try {
    return { ...(await writeBatch(pool, table, batch)), rejected: 0 };
  } catch (err) {
    if (!(err instanceof DataError)) throw err;
    return splitRejected(pool, table, batch, err);
  }
}

/** The database refused the batch as a whole: its halves are committed on their own, down to the refused messages. */
async function splitRejected(pool: pg.Pool, table: TableName, batch: SealedBatch, err: DataError): Promise<CommitResult> {
  // Each part carries the batch's vault rows, and writes those its own newly claimed messages use.
  const n = batchLength(batch);
  if (n === 1) return commitRejected(pool, table, batch, err);
  const mid = Math.ceil(n / 2);
  const a = await commitSplitting(pool, table, partOf(batch, [0, mid]));
  const b = await commitSplitting(pool, table, partOf(batch, [mid, n]));
  return sum(a, b);
}

/** The messages [from, to) of a batch, with all of its vault rows. */
function partOf(batch: SealedBatch, [from, to]: Range): SealedBatch {
  const rows = batch.rows.messageId.length;
  if (from === 0 && to === batchLength(batch)) return batch;
  return {
    ...batch,
    rows: sliceRows(batch.rows, Math.min(from, rows), Math.min(to, rows)),
    quarantine: batch.quarantine.slice(Math.max(from - rows, 0), Math.max(to - rows, 0)),
  };
}

/**
 * The one message of `batch`, which the database (or the encoding) refused: quarantined with less and less of it
 * until it is accepted. A quarantine record first loses its redacted copy, keeping the encrypted original, then the
 * original too.
 */
async function commitRejected(pool: pg.Pool, table: TableName, batch: SealedBatch, first: DataError): Promise<CommitResult> {
  let err = first;
  const isRow = batch.rows.messageId.length === 1;
  // A refused row's record keeps the masked row as its body, unless that is refused too (a character the database's
  // encoding cannot hold, say): then it goes without.
  for (const keepOriginal of isRow || batch.quarantine[0]!.sealedBody ? [true, false] : [false]) {
    try {
      const record = isRow ? rowAsRejected(batch, err, keepOriginal) : recordAsRejected(batch.quarantine[0]!, err, keepOriginal);
      return { ...(await writeBatch(pool, table, { ...batch, rows: emptyRowColumns(), quarantine: [record] })), rejected: 1 };
    } catch (e) {
      if (!(e instanceof DataError) || !keepOriginal) throw e;
      err = e;
    }
  }
  throw err;
}

/** The quarantine record itself was refused: keep the reason, drop the bodies that Postgres would not store. */
function recordAsRejected(o: QuarantineRecord, err: DataError, keepOriginal: boolean): QuarantineRecord {
  // Last, without the user id too: it may be the text the database's encoding cannot hold (the pseudonyms are hex).
  const facts = keepOriginal ? o.facts : { ...o.facts, userId: null };
  return { ...o, detail: `${o.detail}; body not kept: ${err.message}`, redactedBody: null, originalBody: null, sealedBody: keepOriginal ? o.sealedBody : null, facts };
}

/** The batch's one row, refused by the table: a db_rejected quarantine record in its place. */
function rowAsRejected(batch: SealedBatch, err: DataError, keepOriginal: boolean): QuarantineRecord {
  const r = batch.rows;
  const row = rowAt(r, 0);
  const sentAt = r.sentAt[0]!;
  return {
    messageId: r.messageId[0]!,
    sentAt: sentAt === null ? null : new Date(sentAt),
    receivedAt: new Date(r.receivedAt[0]!),
    bodyLength: r.bodyLength[0]!,
    kind: "quarantine",
    reason: "db_rejected",
    detail: keepOriginal ? err.message : `${err.message}; body not kept`,
    // The masked row, not the raw body: it is what the database refused and what a replay loads; its originals
    // are in the vault, which this batch writes whatever happens to its rows.
    redactedBody: keepOriginal ? JSON.stringify(row) : null,
    originalBody: null,
    sealedBody: null,
    // The refused row's user and pseudonyms, whether or not its copy is kept: its values are in the vault.
    facts: { userId: keepOriginal ? row.userId : null, maskedIp: row.maskedIp, maskedDeviceId: row.maskedDeviceId },
  };
}

/** Consecutive ranges of a batch's messages, each under maxBytes as sent (a message larger than that alone). */
export function splitBySize(batch: SealedBatch, maxBytes: number): Range[] {
  const n = batchLength(batch);
  const parts: Range[] = [];
  let from = 0;
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const size = sentBytes(batch, i);
    if (i > from && bytes + size > maxBytes) {
      parts.push([from, i]);
      from = i;
      bytes = 0;
    }
    bytes += size;
  }
  parts.push([from, n]);
  return parts;
}

/** About what message i adds to a statement's parameters: text as is, bytea as hex, plus fixed fields. */
function sentBytes(batch: SealedBatch, i: number): number {
  const r = batch.rows;
  if (i < r.messageId.length) return 200 + r.messageId[i]!.length + r.userId[i]!.length + r.deviceType[i]!.length + (r.locale[i]?.length ?? 0);
  const o = batch.quarantine[i - r.messageId.length]!;
  return 200 + o.messageId.length + o.detail.length + (o.redactedBody?.length ?? 0) + 2 * (o.sealedBody?.ciphertext.length ?? 0);
}

/** The vault rows the rows of `part` refer to (quarantine records refer to none). */
function vaultOf(batch: SealedBatch, part: SealedBatch): SealedBatch["vault"] {
  const ips = new Set(part.rows.maskedIp);
  const devices = new Set(part.rows.maskedDeviceId);
  return batch.vault.filter((v) => (v.kind === "ip" ? ips : devices).has(v.pseudonym));
}

function sum(a: CommitResult, b: CommitResult): CommitResult {
  const byReason = { ...a.quarantinedByReason };
  for (const [reason, n] of Object.entries(b.quarantinedByReason)) byReason[reason] = (byReason[reason] ?? 0) + n;
  return {
    written: a.written + b.written,
    quarantined: a.quarantined + b.quarantined,
    quarantinedByReason: byReason,
    duplicates: a.duplicates + b.duplicates,
    rejected: a.rejected + b.rejected,
    ...mergeEpochs(a.vaultEpochs, b.vaultEpochs),
  };
}

function mergeEpochs(a: VaultEpochs | undefined, b: VaultEpochs | undefined): { vaultEpochs?: VaultEpochs } {
  if (a === undefined || b === undefined) {
    const one = a ?? b;
    return one === undefined ? {} : { vaultEpochs: one };
  }
  const partial = a.partial === true || b.partial === true;
  return { vaultEpochs: { min: Math.min(a.min, b.min), max: Math.max(a.max, b.max), ...(partial ? { partial } : {}) } };
}

/**
 * Preparing is synchronous and its cost grows with the bodies (parsing above all): after every YIELD_EVERY_CHARS of
 * bodies the event loop runs once, so that /healthz, visibility extensions and receives are served while a batch of
 * large bodies is prepared.
 */
const YIELD_EVERY_CHARS = 1024 * 1024;

/**
 * A batch masked and sealed, ready to commit; `settle` says whether it committed, and under which vault epochs (the
 * sealer then knows its vault rows), or null when it did not.
 */
export interface PreparedBatch {
  /** Sealed (columns), or from a prepare thread already in the statement's wire form (commit-batch.ts). */
  batch: SealedBatch | FromThread;
  settle(committed: VaultEpochs | null): void;
}

/**
 * Masks and seals a batch: in this thread (inThreadPreparer, what Lambda and tests use)
 * or in prepare threads (prepare-threads.ts). Either way the same pure functions do the work.
 */
export interface BatchPreparer {
  /** Masks with the pseudonym key active now (keys.pseudonym) and seals with the current data key. */
  prepare(messages: readonly IncomingMessage[], keys: IngestKeys, signal?: AbortSignal): Promise<PreparedBatch>;
  /** Settles when the preparer can no longer work (a prepare thread died): fatal to the run. */
  readonly failure?: Promise<FatalError> | undefined;
}

/** Prepares on the calling thread, yielding to the event loop now and then; seals with the process's sealer. */
export const inThreadPreparer: BatchPreparer = {
  async prepare(messages, keys, signal) {
    const key = keys.pseudonym;
    const outcomes = await prepareYielding(messages, (m) => prepareOutcome(m, key.pseudonymizer));
    const batch = await keys.sealer.seal(outcomes, key.version, signal);
    return { batch, settle: (committed) => committed !== null && keys.sealer.committed(batch, committed) };
  },
};

/**
 * Masks, seals and commits one batch of messages (ids distinct). The masking happens here, at commit time, with the
 * pseudonym key active now: when a rotation switches keys between masking and commit, the statement writes nothing
 * (StaleKeyError) and the batch is masked again with the new key. Transient, data and fatal errors propagate as
 * commitBatch throws them.
 */
export async function commitMessages(
  pool: pg.Pool,
  table: TableName,
  keys: IngestKeys,
  messages: readonly IncomingMessage[],
  signal?: AbortSignal,
  preparer: BatchPreparer = inThreadPreparer,
): Promise<CommitResult> {
  return commitPrepared(keys, signal, async () => {
    const prepared = await preparer.prepare(messages, keys, signal);
    return { commit: () => commitBatch(pool, table, prepared.batch), settle: (committed) => prepared.settle(committed) };
  });
}

/** One attempt at a batch (commitPrepared): its statement(s), and what the sealer learns once they ran or failed. */
export interface PreparedAttempt<R> {
  commit(): Promise<R>;
  settle(committed: VaultEpochs | null): void;
}

/**
 * The commit of a batch on either path (login here, a contract's in commit-contract-batch.ts): each attempt masks and
 * seals anew (`attempt`), then commits. A rotation that switched keys between masking and commit (StaleKeyError)
 * refreshes the keys and masks again; vault values deleted (erase, prune) since the sealer learnt what the vault
 * holds (StaleVaultError) make it seal everything again. Two switches in a row are a rotation racing another; past
 * that, the error propagates and the runner backs off like any transient error.
 */
export async function commitPrepared<R extends { vaultEpochs?: VaultEpochs | undefined }>(
  keys: IngestKeys,
  signal: AbortSignal | undefined,
  attempt: () => Promise<PreparedAttempt<R>>,
): Promise<R> {
  for (let n = 0; ; n++) {
    const prepared = await attempt();
    let committed: VaultEpochs | null = null;
    try {
      const r = await prepared.commit();
      // A result without epochs (nothing was written) teaches the sealer nothing: no epoch to hold it under.
      committed = r.vaultEpochs ?? null;
      return r;
    } catch (err) {
      if (err instanceof StaleVaultError && n < 2) {
        keys.sealer.staleVault(err.epoch);
        continue;
      }
      if (!(err instanceof StaleKeyError) || n >= 2) throw err;
      await keys.refresh(signal);
    } finally {
      prepared.settle(committed);
    }
  }
}

/** Prepares each message in turn (either path's pure function), letting the event loop run every YIELD_EVERY_CHARS. */
export async function prepareYielding<O>(messages: readonly IncomingMessage[], prepareOne: (m: IncomingMessage) => O): Promise<O[]> {
  const outcomes: O[] = [];
  let since = 0;
  for (const m of messages) {
    outcomes.push(prepareOne(m));
    since += m.body.length;
    if (since >= YIELD_EVERY_CHARS) {
      since = 0;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  return outcomes;
}
