/**
 * What the two routes of `masq quarantine replay` share: the login's (replay-login.ts: the login parser, the login
 * table) and a contract's (replay-contract.ts: the contract's compiled path, each event type's table). A record takes
 * the route of the path that quarantined it, never the other: a contract's record holds `pseudonyms` (never NULL, 106_contract_tables.sql),
 * a login's does not. Here: the record as a page reads it, the page a route prepares, the statement's claim and guard,
 * and the loop that splits a refused statement down to the refused records.
 */
import { sql, type RawBuilder } from "kysely";
import type pg from "pg";
import { DataError } from "../errors.ts";
import type { VaultEntry } from "../ingest/batch.ts";
import type { IngestKeys } from "../keys/ingest-keys.ts";
import { StaleKeyError } from "../ingest/write-batch.ts";

export interface ReplayRecord {
  message_id: string;
  reason: string;
  body: string | null;
  sent_at: Date | null;
  received_at: Date;
  has_original: boolean;
}

/** The vault rows a replay adds (the originals of the rows it masked), under the pseudonym key its rows were masked with. */
export interface ReplayVault {
  keyVersion: number;
  entries: readonly VaultEntry<string>[];
}

export interface ReplayResult {
  replayed: number;
  /** Not pending any more (already replayed, or no such quarantine record). */
  skipped: number;
  /** Still refused by the database: messageId → the database's reason. */
  refused: Map<string, string>;
}

/** One page as a route prepared it: what loads (written by `write`), what masq still refuses, what has nothing to replay from. */
export interface PreparedPage {
  loads: number;
  /** Still rejected by masq's validation (or the contract), by reason code. */
  stillRejected: Map<string, number>;
  /** No original kept and no corrected body. */
  cannot: number;
  /** A contract's db_rejected records: they keep the masked row the table refused, not the original, and no event type. */
  rowsOnly: number;
  write(pool: pg.Pool): Promise<ReplayResult>;
}

export interface ReplayRoute {
  /** Which records the route replays: a contract's (pseudonyms IS NOT NULL) or the login's (NULL). */
  contract: boolean;
  /** Whether a record is replayed from a body (its decrypted original, or the corrected one) rather than what it keeps. */
  fromBody(r: ReplayRecord, corrected: boolean): boolean;
  /**
   * One page: `bodies` holds the body of each record fromBody chose (a record missing from it is left as it is),
   * `keys` is set when there are any. A dry run (seal false) only counts: sealing would draw a data key for nothing.
   */
  prepare(records: readonly ReplayRecord[], bodies: ReadonlyMap<string, string>, keys: IngestKeys | undefined, opts: { seal: boolean; corrected: boolean }): Promise<PreparedPage>;
}

/**
 * Loads replayed records in statements of at most 500, each split in halves when the database refuses it (as
 * ingestion's are), down to the records it refuses on their own. `statement` returns how many it wrote.
 */
export async function replaySplitting<T extends { messageId: string }>(items: readonly T[], statement: (part: readonly T[]) => Promise<number>): Promise<ReplayResult> {
  const result: ReplayResult = { replayed: 0, skipped: 0, refused: new Map() };
  const run = async (part: readonly T[]): Promise<void> => {
    try {
      const n = await statement(part);
      result.replayed += n;
      result.skipped += part.length - n;
    } catch (err) {
      if (!(err instanceof DataError)) throw err;
      if (part.length === 1) {
        result.refused.set(part[0]!.messageId, err.message);
        return;
      }
      const mid = Math.ceil(part.length / 2);
      await run(part.slice(0, mid));
      await run(part.slice(mid));
    }
  };
  for (let i = 0; i < items.length; i += 500) {
    await run(items.slice(i, i + 500));
  }
  return result;
}

/**
 * The CTEs `guard`, `pending`, `marked` and `ledger` of a replay statement: the pseudonym key's share lock (when rows
 * were masked now; a db_rejected row replays as it was masked: no version, nothing to check) and the vault epoch's,
 * as ingestion's batches take them (104_lifecycle.sql: an erasure waits for the rows written here, and never deletes
 * a value they use); then the pending records of the route among `messageIds`, row-locked, so that a concurrent
 * second replay of a record is a no-op; marked replayed, their ledger outcome 'written'. The statement inserts the
 * rows of `marked` only, and the vault values of the rows it inserted only.
 */
export function replayClaim(messageIds: readonly string[], keyVersion: number | null, contract: boolean): RawBuilder<unknown> {
  return sql`guard AS (
         SELECT CASE WHEN ${keyVersion}::int IS NULL THEN true ELSE masq.lock_pseudonym_key(${keyVersion}::int) END AND masq.lock_vault_epoch() IS NOT NULL AS ok
       ), pending AS (
         SELECT q.message_id FROM masq.quarantine q
         WHERE q.message_id = ANY(${messageIds}::text[]) AND q.replayed_at IS NULL AND q.pseudonyms IS ${sql.raw(contract ? "NOT NULL" : "NULL")} AND (SELECT ok FROM guard)
         FOR UPDATE OF q
       ), marked AS (
         UPDATE masq.quarantine q SET replayed_at = now() FROM pending p WHERE q.message_id = p.message_id RETURNING q.message_id
       ), ledger AS (
         UPDATE masq.ingest_ledger l SET outcome = 'written' FROM marked m WHERE l.message_id = m.message_id RETURNING 1
       )`;
}

/** The statement's result: how many rows it wrote, unless the pseudonym key was no longer the active one. */
export function writtenOrStale(row: { n: number; key_ok: boolean } | undefined, keyVersion: number | null): number {
  if (row?.key_ok !== true) throw new StaleKeyError(keyVersion ?? 0);
  return row.n;
}
