import type pg from "pg";
import { TransientError } from "../errors.ts";
import { batchLength, type SealedBatch, type VaultEpochs } from "./batch.ts";
import { classifyPgError } from "../db/query.ts";
import { qualified, type TableName } from "../db/tables.ts";

/**
 * The batch's pseudonym key is no longer the active one (a rotation switched keys): nothing was written. The caller
 * reloads the active key and masks the batch again.
 */
export class StaleKeyError extends TransientError {
  override name = "StaleKeyError";
  constructor(version: number) {
    super(`pseudonym key version ${version} is no longer active`, "pseudonym_key_rotated");
  }
}

/**
 * Vault values were deleted (erase, prune) since the sealer learnt which values the vault holds, and the batch left
 * some of those out: nothing was written. The caller forgets what it knew (VaultSealer.staleVault) and seals again.
 */
export class StaleVaultError extends TransientError {
  override name = "StaleVaultError";
  readonly epoch: number;
  constructor(sealedUnder: number, epoch: number) {
    super(`vault epoch ${sealedUnder} is no longer current (${epoch}): vault values were deleted`, "vault_epoch_advanced");
    this.epoch = epoch;
  }
}

export interface BatchResult {
  written: number;
  quarantined: number;
  /** Newly quarantined messages by reason code (redeliveries of already-quarantined messages not counted). */
  quarantinedByReason: Record<string, number>;
  /** Message ids already in the ledger: committed before (a redelivery), so nothing was written again. */
  duplicates: number;
  /**
   * The vault epochs its statements committed under (one statement: min = max). A sealer learns a batch's vault rows
   * only when all committed under the epoch it knows: vault values deleted in between may have been among them.
   */
  vaultEpochs?: VaultEpochs;
}

/**
 * One statement, so one transaction and one round trip per batch: claims every message id in the ingest ledger
 * and writes rows and quarantine records only for the ids it newly claimed. A redelivered message finds its id
 * already claimed and adds nothing; two workers racing on the same id serialise on the ledger's primary key.
 * The vault rows go in the same transaction, insert-if-absent, and only those the newly claimed rows and records use. Nothing at all is written unless the batch's
 * pseudonym key is still the active one (masq.lock_pseudonym_key, which holds a share lock on it until commit),
 * and, when the sealer left values out, the vault epoch is still the one it sealed under (masq.lock_vault_epoch,
 * a table lock held until commit, so a deletion of vault values waits for this batch or this batch for it;
 * migrations/101_keys_and_vault.sql).
 */
function batchSql(table: TableName): string {
  return `
WITH locks AS (
  SELECT masq.lock_pseudonym_key($16) AS key_ok, masq.lock_vault_epoch() AS epoch
), guard AS (
  SELECT key_ok AND ($25::bigint IS NULL OR epoch = $25::bigint) AS ok FROM locks
), rows AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::date[], $29::date[])
    AS r(message_id, user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date, sent_day)
), bad AS (
  SELECT * FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::int[], $14::timestamptz[], $15::timestamptz[],
                       $17::uuid[], $18::bytea[], $19::bytea[], $26::text[], $27::text[], $28::text[])
    AS q(message_id, reason, detail, body, body_length, sent_at, received_at, body_data_key_id, body_nonce, body_ciphertext,
         user_id, masked_ip, masked_device_id)
), claimed AS (
  -- Partitioned by the day of SentTimestamp, which every redelivery repeats (migrations/102_ingest.sql); ids of no
  -- known day (claimed before the partitioning, or sent without a SentTimestamp) are in the undated partition.
  INSERT INTO masq.ingest_ledger (message_id, outcome, sent_day)
  SELECT message_id, outcome, sent_day FROM (
    SELECT message_id, 'written' AS outcome, sent_day FROM rows
    UNION ALL
    SELECT message_id, 'quarantined', coalesce((sent_at AT TIME ZONE 'UTC')::date, '-infinity') FROM bad
  ) m
  WHERE (SELECT ok FROM guard)
    AND NOT EXISTS (SELECT 1 FROM masq.ingest_ledger u WHERE u.sent_day = '-infinity' AND u.message_id = m.message_id)
  ON CONFLICT (message_id, sent_day) DO NOTHING
  RETURNING message_id, outcome
), used AS (
  -- The values the newly claimed rows and records use: only these go into the vault, so a message claimed before (a
  -- redelivery, after an erasure say) brings no value back.
  SELECT 'ip' AS kind, r.masked_ip AS p FROM rows r JOIN claimed c ON c.message_id = r.message_id AND c.outcome = 'written'
  UNION ALL SELECT 'device_id', r.masked_device_id FROM rows r JOIN claimed c ON c.message_id = r.message_id AND c.outcome = 'written'
  UNION ALL SELECT 'ip', b.masked_ip FROM bad b JOIN claimed c ON c.message_id = b.message_id AND c.outcome = 'quarantined'
  UNION ALL SELECT 'device_id', b.masked_device_id FROM bad b JOIN claimed c ON c.message_id = b.message_id AND c.outcome = 'quarantined'
), vaulted AS (
  -- Through the narrow function (migrations/101_keys_and_vault.sql): insert-if-absent in key order (batches sharing values wait for
  -- each other instead of deadlocking), replacing only rows a reveal found planted. Called once, and only when some
  -- value is used; referenced below, so it runs.
  SELECT masq.add_vault_values($16, array_agg(v.kind), array_agg(v.pseudonym), array_agg(v.data_key_id), array_agg(v.nonce), array_agg(v.ciphertext)) AS n,
         count(*) AS entries
  FROM unnest($20::text[], $21::text[], $22::uuid[], $23::bytea[], $24::bytea[]) AS v(kind, pseudonym, data_key_id, nonce, ciphertext)
  WHERE (v.kind, v.pseudonym) IN (SELECT kind, p FROM used)
  HAVING count(*) > 0
), written AS (
  INSERT INTO ${qualified(table)} (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
  SELECT r.user_id, r.device_type, r.masked_ip, r.masked_device_id, r.locale, r.app_version, r.create_date
  FROM rows r JOIN claimed c ON c.message_id = r.message_id AND c.outcome = 'written'
  RETURNING 1
), quarantined AS (
  INSERT INTO masq.quarantine (message_id, reason, detail, body, body_length, sent_at, received_at, body_data_key_id, body_nonce, body_ciphertext,
                               user_id, masked_ip, masked_device_id)
  SELECT b.message_id, b.reason, b.detail, b.body, b.body_length, b.sent_at, b.received_at, b.body_data_key_id, b.body_nonce, b.body_ciphertext,
         b.user_id, b.masked_ip, b.masked_device_id
  FROM bad b JOIN claimed c ON c.message_id = b.message_id AND c.outcome = 'quarantined'
  RETURNING reason
)
SELECT (SELECT key_ok FROM locks) AS key_ok, (SELECT epoch FROM locks)::float8 AS epoch, (SELECT ok FROM guard) AS ok,
       (SELECT coalesce(sum(entries), 0) FROM vaulted)::int AS vault_entries,
       (SELECT count(*) FROM written)::int AS written,
       (SELECT coalesce(json_object_agg(reason, n), '{}') FROM (SELECT reason, count(*)::int AS n FROM quarantined GROUP BY reason) g) AS by_reason`;
}

const sqlCache = new Map<string, string>();

/**
 * A sealed batch in the statement's wire form: its parameters as node-postgres would send them, each array already a
 * Postgres array literal (arrayLiteral). A prepare thread makes it, so that the main thread neither rebuilds a batch
 * from what crossed nor encodes it: a few strings cross, and go to Postgres as they are.
 */
export interface EncodedBatch {
  keyVersion: number;
  vaultEpoch: number | null;
  /** Messages in the batch, and vault rows it carries. */
  messages: number;
  vaultRows: number;
  values: (string | number | null)[];
}

/**
 * Commits a batch: sealed (columns, what commit-batch.ts splits) or encoded (by a prepare thread). Message ids must
 * be distinct (the runner dedupes). Throws TransientError, DataError (some row is unacceptable to this table: split
 * and retry) or FatalError.
 */
export async function writeBatch(pool: pg.Pool, table: TableName, batch: SealedBatch | EncodedBatch): Promise<BatchResult> {
  const key = qualified(table);
  let text = sqlCache.get(key);
  if (text === undefined) sqlCache.set(key, (text = batchSql(table)));
  const encoded = "values" in batch;
  type Result = { key_ok: boolean; epoch: number; ok: boolean; vault_entries: number; written: number; by_reason: Record<string, number> };
  let res: pg.QueryResult<Result>;
  try {
    // pool.query discards the connection on any error. That matters after an encoding error (isEncodingError):
    // node-postgres has then closed the named statement on the server but still counts it as prepared.
    res = await pool.query<Result>({
      text,
      // A named statement is parsed and planned once per connection, not once per batch.
      name: `masq_write_batch_${key}`.slice(0, 63),
      values: encoded ? batch.values : statementValues(batch),
    });
  } catch (err) {
    throw classifyPgError(err);
  }
  if (res.rows[0]?.key_ok !== true) throw new StaleKeyError(batch.keyVersion);
  if (res.rows[0].ok !== true) throw new StaleVaultError(batch.vaultEpoch!, res.rows[0].epoch);
  const written = res.rows[0].written;
  const quarantinedByReason = res.rows[0].by_reason;
  const quarantined = Object.values(quarantinedByReason).reduce((a, b) => a + b, 0);
  const epoch = res.rows[0].epoch;
  const vaultRows = encoded ? batch.vaultRows : batch.vault.length;
  const messages = encoded ? batch.messages : batchLength(batch);
  const vaultEpochs: VaultEpochs = { min: epoch, max: epoch, ...(res.rows[0].vault_entries < vaultRows ? { partial: true } : {}) };
  return { written, quarantined, quarantinedByReason, duplicates: messages - written - quarantined, vaultEpochs };
}

/** The batch as the statement's parameters ($1 … $29). The rows go as the columns the sealer made. */
function statementValues(batch: SealedBatch): unknown[] {
  const r = batch.rows;
  const q = quarantineColumns(batch);
  const v = vaultColumns(batch);
  return [
    ...[r.messageId, r.userId, r.deviceType, r.maskedIp, r.maskedDeviceId, r.locale, r.appVersion, r.createDate],
    ...[q.id, q.reason, q.detail, q.body, q.len, q.sent, q.recv],
    batch.keyVersion,
    ...[q.key, q.nonce, q.ct],
    ...[v.kind, v.pseudonym, v.key, v.nonce, v.ct],
    batch.vaultEpoch,
    ...[q.user, q.ip, q.dev],
    sentDays(r.sentAt),
  ];
}

const DAY_MS = 86_400_000;

/**
 * Each row's ledger partition: the UTC day of its SentTimestamp, '-infinity' without one (the undated partition).
 * A batch's messages nearly all share a day, so the text is made once per day, not once per row.
 */
export function sentDays(sentAt: readonly (number | null)[]): string[] {
  let day = NaN;
  let text = "";
  const out = new Array<string>(sentAt.length);
  for (let i = 0; i < sentAt.length; i++) {
    const ms = sentAt[i];
    if (ms === null || ms === undefined) {
      out[i] = "-infinity";
      continue;
    }
    const d = Math.floor(ms / DAY_MS);
    if (d !== day) {
      day = d;
      text = new Date(d * DAY_MS).toISOString().slice(0, 10);
    }
    out[i] = text;
  }
  return out;
}

/** The batch in its wire form (EncodedBatch). Throws what encoding throws (a string past V8's limit: RangeError). */
export function encodeBatch(batch: SealedBatch): EncodedBatch {
  const values = statementValues(batch).map((v) => (Array.isArray(v) ? arrayLiteral(v as ArrayElement[]) : (v as number | null)));
  return { keyVersion: batch.keyVersion, vaultEpoch: batch.vaultEpoch, messages: batchLength(batch), vaultRows: batch.vault.length, values };
}

type ArrayElement = string | number | Uint8Array | null;

/**
 * A one-dimensional Postgres array literal, exactly as node-postgres writes an array parameter (its arrayString):
 * NULL, bytea as "\\x" and hex, anything else as its text, quoted, with backslashes and quotes escaped.
 */
export function arrayLiteral(values: readonly ArrayElement[]): string {
  let out = "{";
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ",";
    const v = values[i];
    if (v === null || v === undefined) out += "NULL";
    else if (typeof v === "number") out += `"${String(v)}"`;
    else if (typeof v === "string") out += `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
    else out += `\\\\x${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("hex")}`;
  }
  return out + "}";
}

function quarantineColumns(batch: SealedBatch) {
  const n = batch.quarantine.length;
  const q = {
    id: new Array<string>(n),
    reason: new Array<string>(n),
    detail: new Array<string>(n),
    body: new Array<string | null>(n),
    len: new Array<number>(n),
    sent: new Array<string | null>(n),
    recv: new Array<string>(n),
    key: new Array<string | null>(n),
    nonce: new Array<Buffer | null>(n),
    ct: new Array<Buffer | null>(n),
    user: new Array<string | null>(n),
    ip: new Array<string | null>(n),
    dev: new Array<string | null>(n),
  };
  for (let i = 0; i < n; i++) {
    const o = batch.quarantine[i]!;
    q.id[i] = o.messageId;
    q.reason[i] = o.reason;
    q.detail[i] = o.detail;
    q.body[i] = o.redactedBody;
    q.len[i] = o.bodyLength;
    q.sent[i] = o.sentAt?.toISOString() ?? null;
    q.recv[i] = o.receivedAt.toISOString();
    q.key[i] = o.sealedBody?.dataKeyId ?? null;
    q.nonce[i] = o.sealedBody?.nonce ?? null;
    q.ct[i] = o.sealedBody?.ciphertext ?? null;
    q.user[i] = o.facts.userId;
    q.ip[i] = o.facts.maskedIp;
    q.dev[i] = o.facts.maskedDeviceId;
  }
  return q;
}

function vaultColumns(batch: SealedBatch) {
  const n = batch.vault.length;
  const v = { kind: new Array<string>(n), pseudonym: new Array<string>(n), key: new Array<string>(n), nonce: new Array<Buffer>(n), ct: new Array<Buffer>(n) };
  for (let i = 0; i < n; i++) {
    const e = batch.vault[i]!;
    v.kind[i] = e.kind;
    v.pseudonym[i] = e.pseudonym;
    v.key[i] = e.dataKeyId;
    v.nonce[i] = e.nonce;
    v.ct[i] = e.ciphertext;
  }
  return v;
}
