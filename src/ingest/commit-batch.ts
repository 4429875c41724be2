import type pg from "pg";
import { DataError } from "../errors.ts";
import type { TableName } from "../sink/table-name.ts";
import { writeBatch, type BatchResult, type Outcome, type SealedBatch, type VaultEpochs } from "./write-batch.ts";

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
 * Commits a batch, in statements of at most MAX_STATEMENT_BYTES (one unless its quarantined bodies are large; each
 * is a transaction of its own, which the ledger makes safe: a crash between two redelivers the batch, and what the
 * first committed is skipped). When the database rejects a statement as a whole (a constraint or type the validator
 * did not foresee, or a value masq could not encode), splits it in halves until the offending rows are isolated,
 * quarantines those, and commits the rest. A poison row costs O(log n) extra statements, never a stuck pipeline.
 * Transient and fatal errors propagate.
 */
export async function commitBatch(pool: pg.Pool, table: TableName, batch: SealedBatch): Promise<CommitResult> {
  const parts = splitBySize(batch.outcomes, MAX_STATEMENT_BYTES);
  if (parts.length === 1) return commitSplitting(pool, table, batch);
  let total: CommitResult = { written: 0, quarantined: 0, quarantinedByReason: {}, duplicates: 0, rejected: 0 };
  for (const outcomes of parts) total = sum(total, await commitSplitting(pool, table, { ...batch, outcomes, vault: vaultOf(batch, outcomes) }));
  return total;
}

async function commitSplitting(pool: pg.Pool, table: TableName, batch: SealedBatch): Promise<CommitResult> {
  const { outcomes } = batch;
  try {
    return { ...(await writeBatch(pool, table, batch)), rejected: 0 };
  } catch (err) {
    if (!(err instanceof DataError)) throw err;
    // Each part carries the batch's vault rows, and writes those its own newly claimed messages use.
    if (outcomes.length === 1) return commitRejected(pool, table, batch, outcomes[0]!, err);
    const mid = Math.ceil(outcomes.length / 2);
    const a = await commitSplitting(pool, table, { ...batch, outcomes: outcomes.slice(0, mid) });
    const b = await commitSplitting(pool, table, { ...batch, outcomes: outcomes.slice(mid) });
    return sum(a, b);
  }
}

/**
 * One outcome the database (or the encoding) refused: quarantined with less and less of it until it is accepted.
 * A quarantine record first loses its redacted copy, keeping the encrypted original, then the original too.
 */
async function commitRejected(pool: pg.Pool, table: TableName, batch: SealedBatch, o: Outcome, first: DataError): Promise<CommitResult> {
  let err = first;
  // A refused row's record keeps the masked row as its body, unless that is refused too (a character the database's
  // encoding cannot hold, say): then it goes without.
  for (const keepOriginal of o.kind === "row" || o.sealedBody ? [true, false] : [false]) {
    try {
      return { ...(await writeBatch(pool, table, { ...batch, outcomes: [asRejected(o, err, keepOriginal)] })), rejected: 1 };
    } catch (e) {
      if (!(e instanceof DataError) || !keepOriginal) throw e;
      err = e;
    }
  }
  throw err;
}

function asRejected(o: Outcome, err: DataError, keepOriginal: boolean): Outcome {
  if (o.kind === "quarantine") {
    // The quarantine record itself was refused: keep the reason, drop the bodies that Postgres would not store.
    // Last, without the user id too: it may be the text the database's encoding cannot hold (the pseudonyms are hex).
    const facts = keepOriginal ? o.facts : { ...o.facts, userId: null };
    return { ...o, detail: `${o.detail}; body not kept: ${err.message}`, redactedBody: null, originalBody: null, sealedBody: keepOriginal ? o.sealedBody : null, facts };
  }
  const { messageId, sentAt, receivedAt, bodyLength, row } = o;
  return {
    messageId,
    sentAt,
    receivedAt,
    bodyLength,
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

/** Consecutive runs of outcomes, each under maxBytes as sent (an outcome larger than that alone). */
export function splitBySize(outcomes: readonly Outcome[], maxBytes: number): (readonly Outcome[])[] {
  const parts: Outcome[][] = [];
  let part: Outcome[] = [];
  let bytes = 0;
  for (const o of outcomes) {
    const size = sentBytes(o);
    if (part.length > 0 && bytes + size > maxBytes) {
      parts.push(part);
      part = [];
      bytes = 0;
    }
    part.push(o);
    bytes += size;
  }
  if (part.length > 0) parts.push(part);
  return parts.length <= 1 ? [outcomes] : parts;
}

/** About what an outcome adds to a statement's parameters: text as is, bytea as hex, plus fixed fields. */
function sentBytes(o: Outcome): number {
  if (o.kind === "row") return 200 + o.messageId.length + o.row.userId.length + o.row.deviceType.length + (o.row.locale?.length ?? 0);
  return 200 + o.messageId.length + o.detail.length + (o.redactedBody?.length ?? 0) + 2 * (o.sealedBody?.ciphertext.length ?? 0);
}

/** The vault rows the rows of `outcomes` refer to (quarantine records refer to none). */
function vaultOf(batch: SealedBatch, outcomes: readonly Outcome[]): SealedBatch["vault"] {
  const wanted = new Set<string>();
  for (const o of outcomes) {
    if (o.kind !== "row") continue;
    wanted.add(`ip:${o.row.maskedIp}`);
    wanted.add(`device_id:${o.row.maskedDeviceId}`);
  }
  return batch.vault.filter((v) => wanted.has(`${v.kind}:${v.pseudonym}`));
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
