/**
 * The data of a message's route, from receive to the batch write: what the runner hands to prepare
 * (IncomingMessage), what prepare makes of one message (Outcome), and what the sealer makes of a batch
 * (SealedBatch), which is what crosses back from a prepare thread and what writeBatch sends to Postgres as is.
 */
import type { PiiKind } from "./pseudonymize.ts";
import type { QuarantineFacts } from "./quarantine-body.ts";
import type { ReasonCode } from "./login-event.ts";
import type { ContractReason } from "../contracts/compile-contract.ts";
import type { Sealed } from "../keys/data-keys.ts";

export interface IncomingMessage {
  messageId: string;
  body: string;
  /** SentTimestamp; when absent (never on AWS), create_date falls back to the receive time and the runner warns. */
  sentAt: Date | null;
  receivedAt: Date;
}

/** One row of user_logins, as written. Holds no plain PII. */
export interface LoginRow {
  userId: string;
  deviceType: string;
  maskedIp: string;
  maskedDeviceId: string;
  locale: string | null;
  appVersion: number;
  createDate: string; // YYYY-MM-DD, UTC
}

/**
 * One message, prepared: a row for the user's table, or a quarantine record. What is written holds no plain PII:
 * the originals (`pii`, `originalBody`) stay in memory until the vault sealer encrypts them and drops them
 * (vault-sealer.ts); they reach the database only encrypted.
 */
export type Outcome = RowOutcome | QuarantineRecord;

export interface MessageMeta {
  messageId: string;
  /** SentTimestamp; null only when SQS did not report one. */
  sentAt: Date | null;
  receivedAt: Date;
  bodyLength: number;
}

export interface RowOutcome extends MessageMeta {
  kind: "row";
  row: LoginRow;
  pii?: { ip: string; deviceId: string };
}

export interface QuarantineRecord extends MessageMeta {
  kind: "quarantine";
  /** A contract's reasons (unknown_event, unclassified_field, invalid_timestamp) only on the contract path. */
  reason: ReasonCode | ContractReason;
  detail: string;
  redactedBody: string | null;
  originalBody: string | null;
  sealedBody?: SealedBody | null;
  /** Who the record is about and which pseudonyms it holds: written as typed columns (102_ingest.sql). */
  facts: QuarantineFacts;
}

/** The outcome as it is written: without the plaintext originals. */
export function withoutOriginals(o: Outcome): Outcome {
  if (o.kind === "row") {
    if (o.pii === undefined) return o;
    return { messageId: o.messageId, sentAt: o.sentAt, receivedAt: o.receivedAt, bodyLength: o.bodyLength, kind: "row", row: o.row };
  }
  return o.originalBody === null ? o : { ...o, originalBody: null };
}

export interface SealedBody extends Sealed {
  dataKeyId: string;
}

/** One vault row: a distinct PII value, encrypted, under its pseudonym. A contract's kinds are any it declares. */
export interface VaultEntry<K extends string = PiiKind> extends Sealed {
  kind: K;
  pseudonym: string;
  dataKeyId: string;
}

/**
 * A batch's rows column by column (index i is one message), in the shape the batch statement takes them
 * (unnest of one array per column): made once, by the sealer, and never turned back into objects. Copying a
 * thousand rows as objects between threads cost the main thread about 2.3 µs per message to deserialise; columns
 * of strings and numbers about 0.4.
 */
export interface RowColumns {
  messageId: string[];
  /** ms since epoch, or null (SQS did not report SentTimestamp). */
  sentAt: (number | null)[];
  /** ms since epoch. */
  receivedAt: number[];
  bodyLength: number[];
  userId: string[];
  deviceType: string[];
  maskedIp: string[];
  maskedDeviceId: string[];
  locale: (string | null)[];
  appVersion: number[];
  createDate: string[];
}

export function emptyRowColumns(): RowColumns {
  return { messageId: [], sentAt: [], receivedAt: [], bodyLength: [], userId: [], deviceType: [], maskedIp: [], maskedDeviceId: [], locale: [], appVersion: [], createDate: [] };
}

/** Rows [from, to) of the columns (a copy; only the rare split of a refused statement needs one). */
export function sliceRows(r: RowColumns, from: number, to: number): RowColumns {
  const out = {} as Record<keyof RowColumns, unknown[]>;
  for (const k of Object.keys(r) as (keyof RowColumns)[]) out[k] = r[k].slice(from, to);
  return out as unknown as RowColumns;
}

/** Row i of the columns, as one object (the rare row that the database refused on its own). */
export function rowAt(r: RowColumns, i: number): LoginRow {
  return {
    userId: r.userId[i]!,
    deviceType: r.deviceType[i]!,
    maskedIp: r.maskedIp[i]!,
    maskedDeviceId: r.maskedDeviceId[i]!,
    locale: r.locale[i]!,
    appVersion: r.appVersion[i]!,
    createDate: r.createDate[i]!,
  };
}

/**
 * A batch as committed: rows (as columns) and quarantine records whose pseudonyms were made with pseudonym key
 * `keyVersion`, and their vault rows. Holds no plaintext originals.
 */
export interface SealedBatch {
  keyVersion: number;
  rows: RowColumns;
  /** Rare (malformed messages): kept as records. */
  quarantine: readonly QuarantineRecord[];
  vault: readonly VaultEntry[];
  /**
   * The vault epoch (101_keys_and_vault.sql) under which the sealer left out values it believed the vault holds; null when it
   * left none out (the batch is then complete under any epoch).
   */
  vaultEpoch: number | null;
}

/** Messages in the batch: its rows and its quarantine records. */
export function batchLength(b: SealedBatch): number {
  return b.rows.messageId.length + b.quarantine.length;
}

export interface VaultEpochs {
  min: number;
  max: number;
  /**
   * Some vault rows the batch carried were not written (their messages had been committed before, or were split off
   * into another statement): the sealer learns none of this batch's rows.
   */
  partial?: boolean;
}
