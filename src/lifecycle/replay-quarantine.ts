import type pg from "pg";
import { DataError } from "../errors.ts";
import type { LoginRow } from "../mask/mask-event.ts";
import { classifyPgError } from "../sink/pg-errors.ts";
import { qualified, type TableName } from "../sink/table-name.ts";
import { StaleKeyError, type VaultEntry } from "../sink/write-batch.ts";

/** The vault rows a replay adds (a corrected body's originals), under the pseudonym key its rows were masked with. */
export interface ReplayVault {
  keyVersion: number;
  entries: readonly VaultEntry[];
}

export interface ReplayItem {
  messageId: string;
  row: LoginRow;
}

export interface ReplayResult {
  replayed: number;
  /** Not pending any more (already replayed, or no such quarantine record). */
  skipped: number;
  /** Still refused by the database: messageId → the database's reason. */
  refused: Map<string, string>;
}

/**
 * Loads quarantined messages after all, in one statement per batch: marks each pending quarantine record replayed,
 * turns its ledger outcome into 'written' and inserts its row, for records not replayed before (the row lock makes a
 * concurrent second replay of the same record a no-op). Batches the database refuses are split like ingestion's.
 */
export async function replayRows(
  pool: pg.Pool,
  table: TableName,
  items: readonly ReplayItem[],
  vault?: ReplayVault,
): Promise<ReplayResult> {
  const result: ReplayResult = { replayed: 0, skipped: 0, refused: new Map() };
  const run = async (part: readonly ReplayItem[]): Promise<void> => {
    try {
      const n = await replayStatement(pool, table, part, vault);
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

async function replayStatement(pool: pg.Pool, table: TableName, items: readonly ReplayItem[], vault: ReplayVault | undefined): Promise<number> {
  const col = <K extends keyof LoginRow>(k: K) => items.map((i) => i.row[k]);
  const entries = vault?.entries ?? [];
  let res: pg.QueryResult<{ n: number; key_ok: boolean }>;
  try {
    // A db_rejected row replays as it was masked; a corrected body was masked now, under the active key, which the
    // guard checks as ingestion's does (no vault entries and no version: nothing to check). The vault epoch is
    // share-locked as ingestion's batches lock it (migration 009), so an erasure waits for the rows written here, and
    // never deletes a value they use.
    res = await pool.query<{ n: number; key_ok: boolean }>(
      `WITH guard AS (
         SELECT CASE WHEN $9::int IS NULL THEN true ELSE masq.lock_pseudonym_key($9) END AND masq.lock_vault_epoch() IS NOT NULL AS ok
       ), input AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::date[])
           AS r(message_id, user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
       ), pending AS (
         SELECT q.message_id FROM masq.quarantine q JOIN input i ON i.message_id = q.message_id
         WHERE q.replayed_at IS NULL AND (SELECT ok FROM guard) FOR UPDATE OF q
       ), marked AS (
         UPDATE masq.quarantine q SET replayed_at = now() FROM pending p WHERE q.message_id = p.message_id RETURNING q.message_id
       ), ledger AS (
         UPDATE masq.ingest_ledger l SET outcome = 'written' FROM marked m WHERE l.message_id = m.message_id RETURNING 1
       ), written AS (
         INSERT INTO ${qualified(table)} (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
         SELECT i.user_id, i.device_type, i.masked_ip, i.masked_device_id, i.locale, i.app_version, i.create_date
         FROM input i JOIN marked m ON m.message_id = i.message_id
         RETURNING masked_ip::text AS masked_ip, masked_device_id::text AS masked_device_id
       ), vaulted AS (
         -- Only the values of rows this statement wrote: a record replayed before brings nothing back.
         SELECT masq.add_vault_values($9, array_agg(v.kind), array_agg(v.pseudonym), array_agg(v.data_key_id), array_agg(v.nonce), array_agg(v.ciphertext)) AS n
         FROM unnest($10::text[], $11::text[], $12::uuid[], $13::bytea[], $14::bytea[]) AS v(kind, pseudonym, data_key_id, nonce, ciphertext)
         WHERE (v.kind = 'ip' AND v.pseudonym IN (SELECT masked_ip FROM written))
            OR (v.kind = 'device_id' AND v.pseudonym IN (SELECT masked_device_id FROM written))
         HAVING count(*) > 0
       )
       SELECT (SELECT count(*) FROM written)::int AS n, (SELECT ok FROM guard) AS key_ok, (SELECT count(*) FROM vaulted) AS vault_calls`,
      [
        items.map((i) => i.messageId),
        col("userId"),
        col("deviceType"),
        col("maskedIp"),
        col("maskedDeviceId"),
        col("locale"),
        col("appVersion"),
        col("createDate"),
        vault?.keyVersion ?? null,
        entries.map((e) => e.kind),
        entries.map((e) => e.pseudonym),
        entries.map((e) => e.dataKeyId),
        entries.map((e) => e.nonce),
        entries.map((e) => e.ciphertext),
      ],
    );
  } catch (err) {
    throw classifyPgError(err);
  }
  if (res.rows[0]?.key_ok !== true) throw new StaleKeyError(vault?.keyVersion ?? 0);
  return res.rows[0].n;
}
