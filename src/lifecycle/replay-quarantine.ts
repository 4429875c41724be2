import { sql } from "kysely";
import type pg from "pg";
import { readKeyConfig, readPseudonymKey } from "../settings/config.ts";
import { classified } from "../db/query.ts";
import type { Db } from "../db/pool.ts";
import { DataError } from "../errors.ts";
import type { LoginRow, Outcome, VaultEntry } from "../ingest/batch.ts";
import { prepareOutcome } from "../ingest/prepare.ts";
import { masqQueries } from "../db/schema.ts";
import type { TableName } from "../db/tables.ts";
import { StaleKeyError } from "../ingest/write-batch.ts";
import { IngestKeys } from "../keys/ingest-keys.ts";
import type { KeyProvider } from "../keys/key-provider.ts";
import { openAuditKey, type AuditKey } from "../keys/audit-key.ts";
import type { Lifecycle } from "./audited-command.ts";
import { revealOriginals } from "./reveal-originals.ts";
import { readRotationState } from "./rotation-state.ts";
import { appendSealed } from "./audit.ts";

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
  const messageIds = items.map((i) => i.messageId);
  const [userIds, deviceTypes, maskedIps, maskedDeviceIds, locales, appVersions, createDates] = [col("userId"), col("deviceType"), col("maskedIp"), col("maskedDeviceId"), col("locale"), col("appVersion"), col("createDate")];
  const keyVersion = vault?.keyVersion ?? null;
  const [kinds, pseudonyms, dataKeyIds, nonces, ciphertexts] = [entries.map((e) => e.kind), entries.map((e) => e.pseudonym), entries.map((e) => e.dataKeyId), entries.map((e) => e.nonce), entries.map((e) => e.ciphertext)];
  // A db_rejected row replays as it was masked; a corrected body was masked now, under the active key, which the
  // guard checks as ingestion's does (no vault entries and no version: nothing to check). The vault epoch is
  // share-locked as ingestion's batches lock it (104_lifecycle.sql), so an erasure waits for the rows written here, and
  // never deletes a value they use.
  const res = await classified(
    sql<{ n: number; key_ok: boolean }>`WITH guard AS (
         SELECT CASE WHEN ${keyVersion}::int IS NULL THEN true ELSE masq.lock_pseudonym_key(${keyVersion}::int) END AND masq.lock_vault_epoch() IS NOT NULL AS ok
       ), input AS (
         SELECT * FROM unnest(${messageIds}::text[], ${userIds}::text[], ${deviceTypes}::text[], ${maskedIps}::text[], ${maskedDeviceIds}::text[], ${locales}::text[], ${appVersions}::int[], ${createDates}::date[])
           AS r(message_id, user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
       ), pending AS (
         SELECT q.message_id FROM masq.quarantine q JOIN input i ON i.message_id = q.message_id
         WHERE q.replayed_at IS NULL AND (SELECT ok FROM guard) FOR UPDATE OF q
       ), marked AS (
         UPDATE masq.quarantine q SET replayed_at = now() FROM pending p WHERE q.message_id = p.message_id RETURNING q.message_id
       ), ledger AS (
         UPDATE masq.ingest_ledger l SET outcome = 'written' FROM marked m WHERE l.message_id = m.message_id RETURNING 1
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
  if (res.rows[0]?.key_ok !== true) throw new StaleKeyError(vault?.keyVersion ?? 0);
  return res.rows[0].n;
}

/** The audit reason of `replay --body-file` without --reason (the replay of the original is "quarantine replay"). */
export const CORRECTED_REPLAY_REASON = "quarantine replay with a corrected body (no --reason given)";

export interface ReplayRequest {
  ids: string[];
  reasonCode: string | undefined;
  table: TableName;
  dryRun: boolean;
  /** --body-file's content: replaces the original of the one record (ids[0]). */
  correctedBody: string | undefined;
  /** The justification of a corrected replay, which is always audited. */
  auditReason: string | undefined;
}

export interface ReplaySummary {
  wouldReplay: number;
  replayed: number;
  skipped: number;
  /** Refused by the table: message id → the database's reason. */
  refused: Map<string, string>;
  /** Records with no original kept and no corrected body: nothing to replay from. */
  cannot: number;
  /** Still rejected by masq's validation, by reason code. */
  stillRejected: Map<string, number>;
}

/**
 * `masq quarantine replay`: loads quarantined messages after all, through the same validate/mask/vault path as
 * ingestion, with the active pseudonym key.
 *  - a record with its original body kept (encrypted): the original is decrypted and validated again; it loads if
 *    masq now accepts it (a validator fixed), and stays quarantined, with its reason, if not;
 *  - db_rejected records hold the masked row itself: it loads once the table accepts it (a constraint fixed);
 *  - a corrected body: one record with the operator's body instead of its original.
 * Decrypting originals is a reveal, audited like `masq unmask`; writing is what ingestion does: a login holding both
 * masq_unmask and masq_ingest (or the owner), and the master key's decrypt rights. A refusal (roles missing, a
 * rotation in progress, a corrected body still rejected) is one line and replays nothing.
 */
export async function replayQuarantine(
  lc: Lifecycle,
  req: ReplayRequest,
  progress: { total(n: number): void; page(records: number, done: number): void },
): Promise<{ refusal: string } | ReplaySummary> {
  const pool = lc.db.pool;
  const pending = () => {
    let q = masqQueries(lc.db).selectFrom("masq.quarantine").where("replayed_at", "is", null);
    if (req.ids.length > 0) q = q.where("message_id", "in", req.ids);
    if (req.reasonCode !== undefined) q = q.where("reason", "=", req.reasonCode);
    return q;
  };
  const missing = await missingReplayRoles(lc.db);
  if (missing.length > 0) {
    return {
      refusal:
        `quarantine replay reads originals (masq_unmask) and writes as ingestion does (masq_ingest); this login lacks ${missing.join(" and ")}: ` +
        `GRANT ${missing.join(", ")} TO <your login>`,
    };
  }
  const rotation = await readRotationState(pool);
  if (rotation !== undefined) {
    // Its passes rewrite the quarantine and the vault under the new key while a replay would write under either.
    return {
      refusal:
        `a pseudonym key rotation (version ${rotation.fromVersion} to ${rotation.toVersion}, ${rotation.phase} pass) is in progress; ` +
        "replay after it has finished (masq rotate pseudonym-key --resume finishes it)",
    };
  }
  const total = Number((await pending().select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);
  progress.total(total);
  const sum: ReplaySummary = { wouldReplay: 0, replayed: 0, skipped: 0, refused: new Map(), cannot: 0, stillRejected: new Map() };
  const keys = lazyIngestKeys(lc);
  try {
    if (req.auditReason !== undefined && total > 0 && !req.dryRun) await auditCorrectedReplay(pool, keys, req.ids[0]!, req.auditReason, req.correctedBody!.length);
    // Page by page, in message id order, so that memory stays bounded however many records are selected.
    let after: string | undefined;
    let done = 0;
    for (;;) {
      let q = pending()
        // body_data_key_id is set exactly when the original is kept (the ciphertext column is the owner's only).
        .select(["message_id", "reason", "body", "body_length", "sent_at", "received_at", sql<boolean>`body_data_key_id IS NOT NULL`.as("has_original")])
        .orderBy("message_id")
        .limit(REPLAY_PAGE);
      if (after !== undefined) q = q.where("message_id", ">", after);
      const fetched = await q.execute();
      if (fetched.length === 0) break;
      const records = withinBytes(fetched, REPLAY_PAGE_BYTES);
      after = records.at(-1)!.message_id;
      const page = await prepareReplay(pool, records, req.correctedBody, keys, { seal: !req.dryRun });
      sum.cannot += page.cannot;
      for (const [why, n] of page.stillRejected) sum.stillRejected.set(why, (sum.stillRejected.get(why) ?? 0) + n);
      if (req.correctedBody !== undefined && page.items.length === 0) return { refusal: `the corrected body is still rejected: ${[...page.stillRejected.keys()].join(", ")}` };
      if (req.dryRun) {
        sum.wouldReplay += page.items.length;
      } else {
        const r = await replayRows(pool, req.table, page.items, page.vault);
        sum.replayed += r.replayed;
        sum.skipped += r.skipped;
        for (const [id, why] of r.refused) sum.refused.set(id, why);
      }
      done += records.length;
      progress.page(records.length, done);
      if (fetched.length < REPLAY_PAGE && records.length === fetched.length) break;
    }
  } finally {
    keys.close();
  }
  return sum;
}

/**
 * The audit row of a replay with a corrected body (who, when, why, which record), committed before the body is
 * loaded. It names no subject: nothing is revealed, the operator brings the body.
 */
async function auditCorrectedReplay(pool: pg.Pool, lazyKeys: LazyKeys, messageId: string, reason: string, bodyLength: number): Promise<void> {
  const { auditKey, client } = await lazyKeys.get();
  const selector = JSON.stringify({ body_length: bodyLength });
  await appendSealed(pool, auditKey, sql<{ seq: string }>`SELECT masq.audit_replay_corrected(${reason}, ${selector}, ${JSON.stringify(client)}, ${messageId}, ${auditKey.version})::text AS seq`);
}

/** Records read, decrypted, validated and sealed at a time by `quarantine replay`. */
const REPLAY_PAGE = 1000;
/** …and at most this many bytes of originals: 1,000 quarantined 1 MiB bodies must not be decrypted at once. */
export const REPLAY_PAGE_BYTES = 32 * 1024 * 1024;

/** The longest prefix of `records` whose original bodies fit in maxBytes (always at least the first record). */
export function withinBytes<T extends { body_length: number | null }>(records: readonly T[], maxBytes: number): T[] {
  let bytes = 0;
  let n = 0;
  for (const r of records) {
    bytes += r.body_length ?? 0;
    if (n > 0 && bytes > maxBytes) break;
    n++;
  }
  return records.slice(0, n);
}

interface ReplayRecord {
  message_id: string;
  reason: string;
  body: string | null;
  sent_at: Date | null;
  received_at: Date;
  has_original: boolean;
}

/** The keys for a replay, opened at the first page that needs them (db_rejected rows need none). */
interface ReplayKeys {
  keys: IngestKeys;
  provider: KeyProvider;
  auditKey: AuditKey;
  client: Record<string, string>;
}

interface LazyKeys {
  get(): Promise<ReplayKeys>;
  close(): void;
}

function lazyIngestKeys(lc: Lifecycle): LazyKeys {
  let opened: Promise<ReplayKeys> | undefined;
  let keys: IngestKeys | undefined;
  let auditKey: AuditKey | undefined;
  return {
    get() {
      opened ??= (async () => {
        const provider = lc.keys();
        keys = await IngestKeys.open({ pool: lc.db.pool, provider, pseudonymKeyOverride: readPseudonymKey(lc.settings), limits: readKeyConfig(lc.settings).limits });
        auditKey = await openAuditKey(lc.db.pool, provider);
        return { keys, provider, auditKey, client: await lc.client() };
      })();
      return opened;
    },
    close() {
      keys?.close();
      auditKey?.key.fill(0);
    },
  };
}

/**
 * One page of a replay: what loads (rows masked and sealed again under the active key, or db_rejected rows as
 * they were kept), what masq still rejects, by reason, and how many records have nothing to replay from.
 */
async function prepareReplay(
  pool: pg.Pool,
  records: readonly ReplayRecord[],
  correctedBody: string | undefined,
  lazyKeys: LazyKeys,
  opts: { seal: boolean },
): Promise<{ items: ReplayItem[]; vault: ReplayVault | undefined; stillRejected: Map<string, number>; cannot: number }> {
  const items: ReplayItem[] = [];
  const stillRejected = new Map<string, number>();
  let cannot = 0;
  let vault: ReplayVault | undefined;
  const fromOriginal = (r: ReplayRecord) => correctedBody !== undefined || (r.reason !== "db_rejected" && r.has_original);
  if (records.some(fromOriginal)) {
    const { keys, provider, auditKey, client } = await lazyKeys.get();
    // Every decrypted original is a reveal: one audit row per page names the records (lifecycle/reveal-originals.ts).
    const originals =
      correctedBody === undefined
        ? await revealOriginals(pool, provider, auditKey, {
            reason: "quarantine replay",
            selector: { messages: records.filter(fromOriginal).length },
            client,
            messageIds: records.filter(fromOriginal).map((r) => r.message_id),
          })
        : new Map<string, string>();
    const outcomes: Outcome[] = [];
    for (const r of records) {
      if (!fromOriginal(r)) continue;
      const body = correctedBody ?? originals.get(r.message_id);
      if (body === undefined) continue;
      const o = prepareOutcome({ messageId: r.message_id, body, sentAt: r.sent_at, receivedAt: r.received_at }, keys.pseudonym.pseudonymizer);
      if (o.kind === "row") outcomes.push(o);
      else stillRejected.set(o.reason, (stillRejected.get(o.reason) ?? 0) + 1);
    }
    // A dry run only counts: sealing would draw (and store) a data key for values it does not write.
    if (opts.seal) vault = { keyVersion: keys.pseudonym.version, entries: (await keys.sealer.seal(outcomes, keys.pseudonym.version)).vault };
    else vault = { keyVersion: keys.pseudonym.version, entries: [] };
    for (const o of outcomes) if (o.kind === "row") items.push({ messageId: o.messageId, row: o.row });
  }
  for (const r of records) {
    if (fromOriginal(r)) continue;
    if (r.reason === "db_rejected" && r.body !== null) items.push({ messageId: r.message_id, row: JSON.parse(r.body) as LoginRow });
    else cannot++;
  }
  return { items, vault, stillRejected, cannot };
}

/** The masq roles a replay needs that the current role neither holds nor owns masq's schema (the owner may do all). */
async function missingReplayRoles(db: Db): Promise<string[]> {
  const r = (
    await classified(
      sql<{ owner: boolean; unmask: boolean; ingest: boolean }>`SELECT pg_has_role(current_user, (SELECT nspowner FROM pg_namespace WHERE nspname = 'masq'), 'USAGE') AS owner,
        pg_has_role(current_user, 'masq_unmask', 'USAGE') AS unmask, pg_has_role(current_user, 'masq_ingest', 'USAGE') AS ingest`.execute(masqQueries(db)),
    )
  ).rows[0]!;
  if (r.owner) return [];
  return [...(r.unmask ? [] : ["masq_unmask"]), ...(r.ingest ? [] : ["masq_ingest"])];
}
