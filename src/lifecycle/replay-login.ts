/**
 * The login's route of `masq quarantine replay` (replay-route.ts): a login record (pseudonyms NULL) is parsed again
 * by the login parser and its row goes into the login table; a db_rejected record holds the masked row itself.
 */
import { sql } from "kysely";
import type pg from "pg";
import { classified } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";
import type { TableName } from "../db/tables.ts";
import type { LoginRow, Outcome } from "../ingest/batch.ts";
import { prepareOutcome } from "../ingest/prepare.ts";
import { replayClaim, replaySplitting, writtenOrStale, type ReplayResult, type ReplayRoute, type ReplayVault } from "./replay-route.ts";

export interface ReplayItem {
  messageId: string;
  row: LoginRow;
}

/** A db_rejected login record replays the masked row it keeps, unless a corrected body is given. */
const fromBody: ReplayRoute["fromBody"] = (r, corrected) => corrected || (r.reason !== "db_rejected" && r.has_original);

export function loginRoute(table: TableName): ReplayRoute {
  return {
    contract: false,
    fromBody,
    async prepare(records, bodies, keys, opts) {
      const items: ReplayItem[] = [];
      const stillRejected = new Map<string, number>();
      let cannot = 0;
      let vault: ReplayVault | undefined;
      if (keys !== undefined) {
        const outcomes: Outcome[] = [];
        for (const r of records) {
          const body = bodies.get(r.message_id);
          if (body === undefined) continue;
          const o = prepareOutcome({ messageId: r.message_id, body, sentAt: r.sent_at, receivedAt: r.received_at }, keys.pseudonym.pseudonymizer);
          if (o.kind === "row") outcomes.push(o);
          else stillRejected.set(o.reason, (stillRejected.get(o.reason) ?? 0) + 1);
        }
        vault = { keyVersion: keys.pseudonym.version, entries: opts.seal ? (await keys.sealer.seal(outcomes, keys.pseudonym.version)).vault : [] };
        for (const o of outcomes) if (o.kind === "row") items.push({ messageId: o.messageId, row: o.row });
      }
      for (const r of records) {
        if (fromBody(r, opts.corrected)) continue;
        if (r.reason === "db_rejected" && r.body !== null) items.push({ messageId: r.message_id, row: JSON.parse(r.body) as LoginRow });
        else cannot++;
      }
      return { loads: items.length, stillRejected, cannot, rowsOnly: 0, write: (pool) => replayRows(pool, table, items, vault) };
    },
  };
}

/**
 * Loads quarantined login messages after all, in one statement per batch: marks each pending quarantine record
 * replayed, turns its ledger outcome into 'written' and inserts its row (replayClaim).
 */
export async function replayRows(pool: pg.Pool, table: TableName, items: readonly ReplayItem[], vault?: ReplayVault): Promise<ReplayResult> {
  return replaySplitting(items, (part) => replayStatement(pool, table, part, vault));
}

async function replayStatement(pool: pg.Pool, table: TableName, items: readonly ReplayItem[], vault: ReplayVault | undefined): Promise<number> {
  const col = <K extends keyof LoginRow>(k: K) => items.map((i) => i.row[k]);
  const entries = vault?.entries ?? [];
  const messageIds = items.map((i) => i.messageId);
  const [userIds, deviceTypes, maskedIps, maskedDeviceIds, locales, appVersions, createDates] = [col("userId"), col("deviceType"), col("maskedIp"), col("maskedDeviceId"), col("locale"), col("appVersion"), col("createDate")];
  // A db_rejected row replays as it was masked; a corrected body was masked now, under the active key, which the
  // guard checks as ingestion's does (no vault entries and no version: nothing to check).
  const keyVersion = vault?.keyVersion ?? null;
  const [kinds, pseudonyms, dataKeyIds, nonces, ciphertexts] = [entries.map((e) => e.kind), entries.map((e) => e.pseudonym), entries.map((e) => e.dataKeyId), entries.map((e) => e.nonce), entries.map((e) => e.ciphertext)];
  const res = await classified(
    sql<{ n: number; key_ok: boolean }>`WITH ${replayClaim(messageIds, keyVersion, false)}, input AS (
         SELECT * FROM unnest(${messageIds}::text[], ${userIds}::text[], ${deviceTypes}::text[], ${maskedIps}::text[], ${maskedDeviceIds}::text[], ${locales}::text[], ${appVersions}::int[], ${createDates}::date[])
           AS r(message_id, user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
       ), written AS (
         INSERT INTO ${sql.id(table.schema, table.name)} (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
         SELECT i.user_id, i.device_type, i.masked_ip, i.masked_device_id, i.locale, i.app_version, i.create_date
         FROM input i JOIN marked m ON m.message_id = i.message_id
         RETURNING masked_ip::text AS masked_ip, masked_device_id::text AS masked_device_id
       ), vaulted AS (
         -- Only the values of rows this statement wrote: a record replayed before brings nothing back.
         SELECT masq.add_vault_values(${keyVersion}::int, array_agg(v.kind), array_agg(v.pseudonym), array_agg(v.data_key_id), array_agg(v.nonce), array_agg(v.ciphertext)) AS n
         FROM unnest(${kinds}::text[], ${pseudonyms}::text[], ${dataKeyIds}::uuid[], ${nonces}::bytea[], ${ciphertexts}::bytea[]) AS v(kind, pseudonym, data_key_id, nonce, ciphertext)
         WHERE (v.kind = 'ip' AND v.pseudonym IN (SELECT masked_ip FROM written))
            OR (v.kind = 'device_id' AND v.pseudonym IN (SELECT masked_device_id FROM written))
         HAVING count(*) > 0
       )
       SELECT (SELECT count(*) FROM written)::int AS n, (SELECT ok FROM guard) AS key_ok, (SELECT count(*) FROM vaulted) AS vault_calls`.execute(masqQueries(pool)),
  );
  return writtenOrStale(res.rows[0], keyVersion);
}
