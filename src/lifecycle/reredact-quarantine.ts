import { sql } from "kysely";
import { FatalError } from "../errors.ts";
import { factsOfJson, type QuarantineFacts, redactBody } from "../ingest/quarantine-body.ts";
import type { Kind } from "../ingest/pseudonymize.ts";
import { IntegrityError, open, quarantineBodyAad } from "../keys/data-keys.ts";
import type { PassContext } from "./audited-command.ts";
import { watchedQuery } from "../db/lock-watch.ts";
import { classified } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";

interface QuarantineRow {
  message_id: string;
  reason: string;
  /** The stored redacted body; null when not read (the original is redacted instead, or it is oversized). */
  body: string | null;
  body_chars: number;
  body_data_key_id: string | null;
  body_nonce: Buffer | null;
  body_ciphertext: Buffer | null;
  /** Whether the record has a stored body at all (a db_rejected record may keep only its pseudonyms). */
  has_body: boolean;
  masked_ip: string | null;
  masked_device_id: string | null;
  /** A non-login record's pseudonyms, "kind:pseudonym" (106_contract_tables.sql). */
  pseudonyms: string[] | null;
}

/** What a record holds after the pass: its copy and its typed pseudonyms (102_ingest.sql), under the new key. */
interface Rewritten {
  bodies: (string | null)[];
  ips: (string | null)[];
  devices: (string | null)[];
  /** Each record's pseudonyms array as JSON (null: it has none). */
  pseudonyms: (string | null)[];
  unmapped: number;
}

/** What one batch of the pass reads, in bytes of originals and stored bodies (at least one record). */
const READ_BYTES = 32 * 1024 * 1024;

/**
 * A stored body longer than this (only an older masq, whose redaction could amplify a body, wrote such) is not read:
 * it is replaced by a note of its length. Far above what redactBody writes (MAX_REDACTED_CHARS).
 */
const MAX_STORED_BODY_CHARS = 1024 * 1024;

/** The records the pass rewrites: a copy, or typed pseudonyms (a db_rejected record whose copy was not kept). */
const HOLDS_PSEUDONYMS = sql<boolean>`(body IS NOT NULL OR masked_ip IS NOT NULL OR masked_device_id IS NOT NULL OR pseudonyms IS NOT NULL)`;

/** A pseudonym in a stored body, as redactBody writes it. */
const TOKEN = /hmac:([0-9a-f]{64})/g;

/**
 * The quarantine pass: the redacted bodies written under the old key ("hmac:<pseudonym>" in place of each PII
 * value) get the new key's pseudonyms. A body whose original is kept (encrypted) is redacted again from the
 * original, exactly as ingestion would now, which also covers values that are in no vault row (a quarantined
 * message's PII is kept only inside its encrypted body). A db_rejected body (the masked row) and a body without its
 * original have their pseudonyms replaced through the rotation map. Records written after the switch are under the
 * new key already and are left alone. The record's masked_ip and masked_device_id (102_ingest.sql) are rewritten with
 * its copy: from the original when it is redacted again, else through the map (NULL where the map has none, as the
 * copy's marker says); a non-login record's pseudonyms ("kind:pseudonym") through the map by kind. Each batch
 * commits with its cursor: resumable, and done once per record.
 * Returns false when stopped by the signal before the end.
 */
export async function reredactQuarantine(ctx: PassContext): Promise<boolean> {
  const { pool, state } = ctx;
  const db = masqQueries(pool);
  const remaining = await classified(
    db
      .selectFrom("masq.quarantine")
      .select((eb) => eb.fn.countAll<string>().as("n"))
      .where(HOLDS_PSEUDONYMS)
      .where("quarantined_at", "<", state.switchedAt)
      .where("message_id", ">", state.quarantineAfter ?? "")
      .executeTakeFirstOrThrow(),
  );
  const total = state.quarantineDone + Number(remaining.n);
  let done = state.quarantineDone;
  let after = state.quarantineAfter ?? "";
  ctx.onBatch?.(done, total);
  for (;;) {
    if (ctx.signal?.aborted) return false;
    // The stored body is read only where it is needed (no original to redact from) and not oversized; a batch stops
    // after READ_BYTES of originals and bodies (always one record at least), however large each record is.
    const { rows } = await classified(
      sql<QuarantineRow>`SELECT message_id, reason, body, body_chars, body_data_key_id, body_nonce, body_ciphertext, has_body, masked_ip, masked_device_id, pseudonyms FROM (
         SELECT *, sum(size) OVER (ORDER BY message_id) - size AS before FROM (
           SELECT message_id, reason, coalesce(length(body), 0) AS body_chars, body_data_key_id, body_nonce, body_ciphertext,
                  CASE WHEN (pseudonyms IS NULL AND body_ciphertext IS NOT NULL AND reason <> 'db_rejected') OR length(body) > ${MAX_STORED_BODY_CHARS} THEN NULL ELSE body END AS body,
                  body IS NOT NULL AS has_body, masked_ip, masked_device_id, pseudonyms,
                  coalesce(octet_length(body_ciphertext), 0) + coalesce(least(length(body), ${MAX_STORED_BODY_CHARS}), 0) AS size
           FROM masq.quarantine
           WHERE ${HOLDS_PSEUDONYMS} AND quarantined_at < ${state.switchedAt} AND message_id > ${after} ORDER BY message_id LIMIT ${ctx.batchSize}
         ) limited
       ) sized
       WHERE before < ${READ_BYTES} ORDER BY message_id`.execute(db),
    );
    if (rows.length === 0) return true;
    after = rows.at(-1)!.message_id;
    const { bodies, ips, devices, pseudonyms, unmapped } = await rewrite(ctx, rows);
    // A record another session locked (masq_unmask may: it marks records replayed) is waited for 1 s, then that
    // session is ended (lock-watch.ts).
    const ids = rows.map((r) => r.message_id);
    const update = sql`WITH updated AS (
         UPDATE masq.quarantine q SET body = i.body, masked_ip = i.ip, masked_device_id = i.dev,
           pseudonyms = CASE WHEN i.ps IS NULL THEN q.pseudonyms ELSE ARRAY(SELECT jsonb_array_elements_text(i.ps::jsonb)) END
         FROM unnest(${ids}::text[], ${bodies}::text[], ${ips}::text[], ${devices}::text[], ${pseudonyms}::text[]) AS i(message_id, body, ip, dev, ps)
         WHERE q.message_id = i.message_id
       )
       UPDATE masq.pseudonym_rotation SET quarantine_after = ${after}, quarantine_done = quarantine_done + ${rows.length}, unmapped = unmapped + ${unmapped}
       WHERE from_version = ${state.fromVersion}`.compile(db);
    await watchedQuery(pool, { what: "a quarantine record the rotation redacts again", onEnded: ctx.onBlockerEnded }, update.sql, [...update.parameters]);
    done += rows.length;
    ctx.onBatch?.(done, total);
  }
}

async function rewrite(ctx: PassContext, rows: readonly QuarantineRow[]): Promise<Rewritten> {
  // A contract's record (its pseudonyms array is set, if empty) is never redacted again from its original: the login's
  // allowlist would keep its user_id, device_type, locale and app_version in clear whatever the contract says of them.
  // Its copy's pseudonyms are mapped instead, below.
  const kept = rows.filter((r) => r.pseudonyms === null && r.has_body && r.reason !== "db_rejected" && r.body_data_key_id !== null && r.body_nonce !== null && r.body_ciphertext !== null);
  const keys = await ctx.opened.get(kept.map((r) => r.body_data_key_id!));
  const bodies = new Map<string, string>();
  const facts = new Map<string, QuarantineFacts>();
  for (const r of kept) {
    let original: Buffer;
    try {
      original = open(keys.get(r.body_data_key_id!)!, { nonce: r.body_nonce!, ciphertext: r.body_ciphertext! }, quarantineBodyAad(r.message_id));
    } catch (err) {
      if (err instanceof IntegrityError) throw new FatalError(`the kept original of quarantined message ${r.message_id} does not decrypt: ${err.message}`);
      throw err;
    }
    try {
      const json: unknown = JSON.parse(original.toString("utf8"));
      bodies.set(r.message_id, JSON.stringify(redactBody(json, ctx.pseudonymizer)));
      facts.set(r.message_id, factsOfJson(json, ctx.pseudonymizer));
    } catch {
      // Not redactable now (it was when it was kept): the stored body, if read, is mapped below.
    } finally {
      original.fill(0);
    }
  }
  for (const r of rows) {
    // Not read, and not redacted again from an original: only its length is kept.
    if (!bodies.has(r.message_id) && r.body === null && r.has_body) bodies.set(r.message_id, JSON.stringify({ "[body not kept]": `${r.body_chars} characters` }));
  }
  const rest = rows.filter((r): r is QuarantineRow & { body: string } => !bodies.has(r.message_id) && r.body !== null);
  const typed = rows.filter((r) => !facts.has(r.message_id)).flatMap((r) => [r.masked_ip, r.masked_device_id].filter((x): x is string => x !== null));
  const entries = rows.flatMap((r) => r.pseudonyms ?? []);
  const map = await mapPseudonyms(
    ctx,
    rest
      .flatMap((r) => [...r.body.matchAll(TOKEN)].map((m) => m[1]!).concat(rowPseudonyms(r)))
      .concat(typed)
      .concat(entries.map((e) => e.slice(e.indexOf(":") + 1))),
  );
  let unmapped = 0;
  // A pseudonym no vault row maps is under the old key and matches nothing once it retires: it becomes a marker.
  const replace = (kind: Kind | undefined, old: string): string => {
    const found = map.get(kind === undefined ? old : `${kind}:${old}`);
    if (found !== undefined) return found;
    unmapped++;
    return `retired-v${ctx.state.fromVersion}`;
  };
  for (const r of rest) {
    if (r.pseudonyms !== null) {
      // A contract's copy (hmac:<pseudonym>, or a db_rejected row's bare pseudonyms): each pseudonym its record lists,
      // where the map has it. One it has not (a hash kind's: no original to pseudonymize again) stays, as in a table.
      let body = r.body;
      for (const e of r.pseudonyms) {
        const found = map.get(e);
        if (found !== undefined) body = body.replaceAll(e.slice(e.indexOf(":") + 1), found);
      }
      bodies.set(r.message_id, body);
      continue;
    }
    const row = r.reason === "db_rejected" ? parseRow(r.body) : undefined;
    if (row !== undefined) {
      row.maskedIp = replace("ip", row.maskedIp);
      row.maskedDeviceId = replace("device_id", row.maskedDeviceId);
      bodies.set(r.message_id, JSON.stringify(row));
    } else {
      bodies.set(
        r.message_id,
        r.body.replace(TOKEN, (_, old: string) => `hmac:${replace(undefined, old)}`),
      );
    }
  }
  // The typed pseudonyms: the new copy's where the original was redacted again, else mapped by kind (none: NULL).
  const mapped = (kind: Kind, old: string | null) => (old === null ? null : (map.get(`${kind}:${old}`) ?? null));
  return {
    bodies: rows.map((r) => bodies.get(r.message_id) ?? null),
    ips: rows.map((r) => facts.get(r.message_id)?.maskedIp ?? (facts.has(r.message_id) ? null : mapped("ip", r.masked_ip))),
    devices: rows.map((r) => facts.get(r.message_id)?.maskedDeviceId ?? (facts.has(r.message_id) ? null : mapped("device_id", r.masked_device_id))),
    // Each "kind:pseudonym" through the map; one the map has not (a hash kind's: no vault value, no original) stays
    // as it is, as a table's hash column does (rewrite-tables.ts).
    pseudonyms: rows.map((r) => (r.pseudonyms === null ? null : JSON.stringify(r.pseudonyms.map((e) => {
      const found = map.get(e);
      return found === undefined ? e : `${e.slice(0, e.indexOf(":"))}:${found}`;
    })))),
    unmapped,
  };
}

/** A db_rejected body: the masked row, whose pseudonyms are bare (no "hmac:" prefix). */
interface MaskedRowBody {
  maskedIp: string;
  maskedDeviceId: string;
  [k: string]: unknown;
}

function parseRow(body: string): MaskedRowBody | undefined {
  try {
    const row = JSON.parse(body) as Partial<MaskedRowBody>;
    return typeof row.maskedIp === "string" && typeof row.maskedDeviceId === "string" ? (row as MaskedRowBody) : undefined;
  } catch {
    return undefined;
  }
}

function rowPseudonyms(r: QuarantineRow & { body: string }): string[] {
  const row = r.reason === "db_rejected" ? parseRow(r.body) : undefined;
  return row === undefined ? [] : [row.maskedIp, row.maskedDeviceId];
}

/** old → new for these pseudonyms, keyed both "<kind>:<old>" and "<old>" (a body's "hmac:" token does not say its kind). */
async function mapPseudonyms(ctx: PassContext, olds: readonly string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (olds.length === 0) return out;
  const distinct = [...new Set(olds)];
  const rows = await classified(
    masqQueries(ctx.pool)
      .selectFrom("masq.pseudonym_rotation_map")
      .select(["kind", "old_pseudonym", "new_pseudonym"])
      .where(sql<boolean>`old_pseudonym = ANY(${distinct}::text[])`)
      .execute(),
  );
  for (const r of rows) {
    out.set(`${r.kind}:${r.old_pseudonym}`, r.new_pseudonym);
    out.set(r.old_pseudonym, r.new_pseudonym);
  }
  return out;
}
