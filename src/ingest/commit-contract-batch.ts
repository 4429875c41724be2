/**
 * A batch from masking to commit on the contract path: commit-batch.ts's guarantees for a contract's batch. Masked at
 * commit time with the pseudonym key active then; written in statements of bounded size; a statement the database
 * refuses as a whole is split down to the refused messages, which are quarantined as db_rejected.
 */
import type pg from "pg";
import { DataError } from "../errors.ts";
import type { IngestKeys } from "../keys/ingest-keys.ts";
import type { IncomingMessage, QuarantineRecord } from "./batch.ts";
import { commitPrepared, MAX_STATEMENT_BYTES, prepareYielding } from "./commit-batch.ts";
import { contractBatchLength, type ContractSealedBatch } from "./contract-batch.ts";
import type { ContractPlan } from "./contract-plan.ts";
import { contractKeysOf, prepareContractOutcome } from "./prepare-contract.ts";
import { contractBatchSql, writeContractBatch, type ContractBatchResult } from "./write-contract-batch.ts";

export interface ContractCommitResult extends ContractBatchResult {
  /** Rows the database refused on their own; they were quarantined as db_rejected instead. */
  rejected: number;
}

/** A plan and its batch statement, generated once at start. */
export interface ContractWriter {
  plan: ContractPlan;
  sql: string;
}

/** What the runner calls for each batch on the contract path (runner.ts RunnerDeps.contract). */
export interface ContractCommitter {
  writer: ContractWriter;
  commit(pool: pg.Pool, keys: IngestKeys, messages: readonly IncomingMessage[], signal?: AbortSignal): Promise<ContractCommitResult>;
}

export function contractCommitter(plan: ContractPlan): ContractCommitter {
  const writer: ContractWriter = { plan, sql: contractBatchSql(plan) };
  return { writer, commit: (pool, keys, messages, signal) => commitContractMessages(pool, writer, keys, messages, signal) };
}

/**
 * Masks, seals and commits one batch of messages (ids distinct) by the contract: commitMessages (commit-batch.ts) for
 * the contract path, on this thread, with the same retries (commitPrepared).
 */
export async function commitContractMessages(pool: pg.Pool, w: ContractWriter, keys: IngestKeys, messages: readonly IncomingMessage[], signal?: AbortSignal): Promise<ContractCommitResult> {
  return commitPrepared(keys, signal, async () => {
    const key = keys.pseudonym;
    const contractKeys = contractKeysOf(key.pseudonymizer);
    const outcomes = await prepareYielding(messages, (m) => prepareContractOutcome(m, w.plan, contractKeys));
    const batch = await keys.sealer.sealContract(outcomes, key.version, signal);
    return { commit: () => commitContractBatch(pool, w, batch), settle: (committed) => committed !== null && keys.sealer.committed(batch, committed) };
  });
}

/** Commits a sealed batch in statements of at most MAX_STATEMENT_BYTES, each split when the database refuses it. */
export async function commitContractBatch(pool: pg.Pool, w: ContractWriter, batch: ContractSealedBatch): Promise<ContractCommitResult> {
  let total: ContractCommitResult | undefined;
  for (const part of splitBySize(batch, MAX_STATEMENT_BYTES)) {
    const r = await commitSplitting(pool, w, part);
    total = total === undefined ? r : sum(total, r);
  }
  return total!;
}

async function commitSplitting(pool: pg.Pool, w: ContractWriter, batch: ContractSealedBatch): Promise<ContractCommitResult> {
  try {
    return { ...(await writeContractBatch(pool, w.plan, w.sql, batch)), rejected: 0 };
  } catch (err) {
    if (!(err instanceof DataError)) throw err;
    const n = contractBatchLength(batch);
    if (n === 1) return commitRejected(pool, w, batch, err);
    const mid = Math.ceil(n / 2);
    return sum(await commitSplitting(pool, w, partOf(batch, 0, mid)), await commitSplitting(pool, w, partOf(batch, mid, n)));
  }
}

/** Messages [from, to) (rows first, then quarantine records), with all of the batch's vault rows. */
function partOf(batch: ContractSealedBatch, from: number, to: number): ContractSealedBatch {
  const rows = batch.rows.length;
  return {
    ...batch,
    rows: batch.rows.slice(Math.min(from, rows), Math.min(to, rows)),
    quarantine: batch.quarantine.slice(Math.max(from - rows, 0), Math.max(to - rows, 0)),
  };
}

/** Consecutive parts of a batch, each under maxBytes as sent (a message larger than that alone). */
function splitBySize(batch: ContractSealedBatch, maxBytes: number): ContractSealedBatch[] {
  const n = contractBatchLength(batch);
  const parts: ContractSealedBatch[] = [];
  let from = 0;
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const size = sentBytes(batch, i);
    if (i > from && bytes + size > maxBytes) {
      parts.push(partOf(batch, from, i));
      from = i;
      bytes = 0;
    }
    bytes += size;
  }
  parts.push(from === 0 ? batch : partOf(batch, from, n));
  return parts;
}

function sentBytes(batch: ContractSealedBatch, i: number): number {
  if (i < batch.rows.length) {
    const r = batch.rows[i]!;
    return 200 + r.messageId.length + r.values.reduce<number>((a, v) => a + (typeof v === "string" ? v.length : 8), 0);
  }
  const o = batch.quarantine[i - batch.rows.length]!;
  return 200 + o.messageId.length + o.detail.length + (o.redactedBody?.length ?? 0) + 2 * (o.sealedBody?.ciphertext.length ?? 0);
}

/**
 * The one message of `batch` the database refused: quarantined as db_rejected with less and less of it until it is
 * accepted. A row's record keeps the row as its copy (what the table would have held: no plain PII), then nothing; a
 * quarantine record loses its copy, then its original and its subject.
 */
async function commitRejected(pool: pg.Pool, w: ContractWriter, batch: ContractSealedBatch, first: DataError): Promise<ContractCommitResult> {
  let err = first;
  const row = batch.rows[0];
  for (const keep of [true, false]) {
    const record = row !== undefined ? rowAsRejected(w.plan, batch, err, keep) : recordAsRejected(batch.quarantine[0]!, err, keep);
    try {
      return { ...(await writeContractBatch(pool, w.plan, w.sql, { ...batch, rows: [], quarantine: [record] })), rejected: 1 };
    } catch (e) {
      if (!(e instanceof DataError) || !keep) throw e;
      err = e;
    }
  }
  throw err;
}

function recordAsRejected(o: QuarantineRecord, err: DataError, keep: boolean): QuarantineRecord {
  if (keep) return { ...o, detail: `${o.detail}; copy not kept: ${err.message}`, redactedBody: null };
  return { ...o, detail: `${o.detail}; body not kept: ${err.message}`, redactedBody: null, originalBody: null, sealedBody: null, facts: { ...o.facts, userId: null } };
}

function rowAsRejected(plan: ContractPlan, batch: ContractSealedBatch, err: DataError, keep: boolean): QuarantineRecord {
  const r = batch.rows[0]!;
  const t = plan.tables[r.table]!;
  const pseudonyms: string[] = [];
  const copy: Record<string, unknown> = {};
  t.columns.forEach((c, j) => {
    const v = r.values[j] ?? null;
    copy[c.name] = v;
    if (c.hmacKind !== undefined && typeof v === "string") pseudonyms.push(`${c.hmacKind}:${v}`);
  });
  const subject = plan.events.get(r.event)?.subject;
  const subjectColumn = subject === undefined ? undefined : t.columns.findIndex((c) => c.path === subject.path);
  const userId = keep && subjectColumn !== undefined && subjectColumn >= 0 && r.values[subjectColumn] != null ? String(r.values[subjectColumn]) : null;
  return {
    messageId: r.messageId,
    sentAt: r.sentAt,
    receivedAt: r.receivedAt,
    bodyLength: r.bodyLength,
    kind: "quarantine",
    reason: "db_rejected",
    detail: keep ? `table ${t.table.schema}.${t.table.name}: ${err.message}` : `table ${t.table.schema}.${t.table.name}: ${err.message}; body not kept`,
    // The masked row, not the raw body: what the database refused; its originals are in the vault, which this batch writes.
    redactedBody: keep ? JSON.stringify(copy) : null,
    originalBody: null,
    sealedBody: null,
    facts: { userId, maskedIp: null, maskedDeviceId: null, pseudonyms: pseudonyms.length === 0 ? null : pseudonyms },
  };
}

function sum(a: ContractCommitResult, b: ContractCommitResult): ContractCommitResult {
  const add = (x: Record<string, number>, y: Record<string, number>) => {
    const out = { ...x };
    for (const [k, n] of Object.entries(y)) out[k] = (out[k] ?? 0) + n;
    return out;
  };
  const epochs =
    a.vaultEpochs === undefined || b.vaultEpochs === undefined
      ? (a.vaultEpochs ?? b.vaultEpochs)
      : {
          min: Math.min(a.vaultEpochs.min, b.vaultEpochs.min),
          max: Math.max(a.vaultEpochs.max, b.vaultEpochs.max),
          ...(a.vaultEpochs.partial === true || b.vaultEpochs.partial === true ? { partial: true } : {}),
        };
  return {
    written: a.written + b.written,
    quarantined: a.quarantined + b.quarantined,
    quarantinedByReason: add(a.quarantinedByReason, b.quarantinedByReason),
    writtenByEvent: add(a.writtenByEvent, b.writtenByEvent),
    duplicates: a.duplicates + b.duplicates,
    rejected: a.rejected + b.rejected,
    ...(epochs === undefined ? {} : { vaultEpochs: epochs }),
  };
}
