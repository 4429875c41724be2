import type pg from "pg";
import { DataError } from "../errors.ts";
import type { LoginRow } from "../mask/mask-event.ts";
import { classifyPgError } from "./pg-errors.ts";
import { qualified, type TableName } from "./table-name.ts";

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
export async function replayRows(pool: pg.Pool, table: TableName, items: readonly ReplayItem[]): Promise<ReplayResult> {
  const result: ReplayResult = { replayed: 0, skipped: 0, refused: new Map() };
  const run = async (part: readonly ReplayItem[]): Promise<void> => {
    try {
      const n = await replayStatement(pool, table, part);
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
  for (let i = 0; i < items.length; i += 500) await run(items.slice(i, i + 500));
  return result;
}

async function replayStatement(pool: pg.Pool, table: TableName, items: readonly ReplayItem[]): Promise<number> {
  const col = <K extends keyof LoginRow>(k: K) => items.map((i) => i.row[k]);
  try {
    const res = await pool.query<{ n: number }>(
      `WITH input AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::date[])
           AS r(message_id, user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
       ), pending AS (
         SELECT q.message_id FROM masq.quarantine q JOIN input i ON i.message_id = q.message_id
         WHERE q.replayed_at IS NULL FOR UPDATE OF q
       ), marked AS (
         UPDATE masq.quarantine q SET replayed_at = now() FROM pending p WHERE q.message_id = p.message_id RETURNING q.message_id
       ), ledger AS (
         UPDATE masq.ingest_ledger l SET outcome = 'written' FROM marked m WHERE l.message_id = m.message_id RETURNING 1
       ), written AS (
         INSERT INTO ${qualified(table)} (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
         SELECT i.user_id, i.device_type, i.masked_ip, i.masked_device_id, i.locale, i.app_version, i.create_date
         FROM input i JOIN marked m ON m.message_id = i.message_id
         RETURNING 1
       )
       SELECT (SELECT count(*) FROM written)::int AS n`,
      [
        items.map((i) => i.messageId),
        col("userId"),
        col("deviceType"),
        col("maskedIp"),
        col("maskedDeviceId"),
        col("locale"),
        col("appVersion"),
        col("createDate"),
      ],
    );
    return res.rows[0]?.n ?? 0;
  } catch (err) {
    throw classifyPgError(err);
  }
}
