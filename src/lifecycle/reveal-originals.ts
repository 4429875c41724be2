import { sql } from "kysely";
import type pg from "pg";
import { FatalError } from "../errors.ts";
import { open, quarantineBodyAad } from "../keys/data-keys.ts";
import { unwrapDataKeys } from "../keys/unwrap-data-keys.ts";
import type { KeyProvider } from "../keys/key-provider.ts";
import { classified } from "../db/query.ts";
import { appendSealed } from "./audit.ts";
import { openAuditKey, type AuditKey } from "../keys/audit-key.ts";
import type { Lifecycle } from "./audited-command.ts";
import { masqQueries } from "../db/schema.ts";

/**
 * The audited pair of functions (step 1, step 2) a reveal of originals goes through; they differ in the action
 * recorded. Their names are written into the statements as they are: only the two constants below are ever used.
 */
export interface BodyReveal {
  audit: string;
  originals: string;
}

/** `masq quarantine replay` (action 'replay'). */
export const REPLAY: BodyReveal = { audit: "masq.audit_reveal_bodies", originals: "masq.quarantine_originals" };
/** `masq quarantine show --original` (action 'quarantine-original', 104_lifecycle.sql). */
export const SHOW_ORIGINAL: BodyReveal = { audit: "masq.audit_quarantine_original", originals: "masq.quarantine_original" };

/**
 * The original bodies of these quarantine records, decrypted, for `masq quarantine replay` and `show --original`: audited like an unmask
 * (lifecycle/unmask.ts). The data keys are unwrapped first (a wrong master key records nothing), then one
 * committed, sealed audit row names the records whose originals are handed out, then masq.quarantine_originals
 * hands out exactly those. One provider call per data key.
 */
export async function revealOriginals(
  pool: pg.Pool,
  provider: KeyProvider,
  auditKey: AuditKey,
  req: { reason: string; selector: Record<string, unknown>; client: Record<string, unknown>; messageIds: readonly string[] },
  reveal: BodyReveal = REPLAY,
): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (req.messageIds.length === 0) return out;
  const ids = (
    await classified(
      masqQueries(pool)
        .selectFrom("masq.quarantine")
        .select("body_data_key_id as id")
        .distinct()
        .where(sql<boolean>`message_id = ANY(${req.messageIds})`)
        .where("body_data_key_id", "is not", null)
        .$narrowType<{ id: string }>()
        .execute(),
    )
  ).map((r) => r.id);
  const keys = await unwrapDataKeys(pool, provider, ids);
  try {
    const { seq } = await appendSealed(
      pool,
      auditKey,
      sql<{ seq: string }>`SELECT ${sql.raw(reveal.audit)}(${req.reason}, ${JSON.stringify(req.selector)}, ${JSON.stringify(req.client)}, ${req.messageIds}, ${auditKey.version})::text AS seq`,
    );
    const rows = (
      await classified(
        sql<{ message_id: string; body_data_key_id: string; body_nonce: Buffer; body_ciphertext: Buffer }>`SELECT message_id, body_data_key_id, body_nonce, body_ciphertext
          FROM ${sql.raw(reveal.originals)}(${seq})`.execute(masqQueries(pool)),
      )
    ).rows;
    for (const r of rows) {
      let key = keys.get(r.body_data_key_id);
      if (key === undefined) {
        for (const [id, k] of await unwrapDataKeys(pool, provider, [r.body_data_key_id])) keys.set(id, (key = k));
      }
      if (key === undefined) throw new FatalError(`the data key of quarantined message ${r.message_id} is missing from masq.data_keys`);
      out.set(r.message_id, open(key, { nonce: r.body_nonce, ciphertext: r.body_ciphertext }, quarantineBodyAad(r.message_id)).toString("utf8"));
    }
    return out;
  } finally {
    for (const k of keys.values()) k.fill(0);
  }
}

/** What `quarantine show --original` shows: the record, and its original body, or why there is none to show. */
export type ShownOriginal =
  | { refused: string }
  | { record: { message_id: string; reason: string; detail: string; received_at: Date; replayed_at: Date | null }; original: string };

/**
 * `masq quarantine show <id> --original --reason "…"`: the body as it was received, decrypted, so that an operator
 * can see why it was refused and write a corrected one for `quarantine replay --body-file`. A reveal like unmask
 * (masq_unmask, action 'quarantine-original'): the audit row commits before the body is returned.
 */
export async function showOriginal(lc: Lifecycle, messageId: string, reason: string): Promise<ShownOriginal> {
  const r = await classified(
    masqQueries(lc.db)
      .selectFrom("masq.quarantine")
      .select(["message_id", "reason", "detail", "received_at", "replayed_at", sql<boolean>`body_data_key_id IS NOT NULL`.as("has_original")])
      .where("message_id", "=", messageId)
      .executeTakeFirst(),
  );
  // The id is not echoed: what was typed may be a value rather than an id (PII in a terminal's scrollback).
  if (r === undefined) return { refused: "no such quarantined message (the <message-id> given): masq quarantine list --all shows the ids" };
  if (!r.has_original) {
    return {
      refused:
        "this record keeps no original body (quarantined before masq kept encrypted originals, or too large to store): " +
        "masq quarantine show <message-id> shows its redacted copy; nothing was revealed",
    };
  }
  const provider = lc.keys();
  const auditKey = await openAuditKey(lc.db.pool, provider);
  let original: string | undefined;
  try {
    const req = { reason, selector: { messages: 1 }, client: await lc.client(), messageIds: [messageId] };
    original = (await revealOriginals(lc.db.pool, provider, auditKey, req, SHOW_ORIGINAL)).get(messageId);
  } finally {
    auditKey.key.fill(0);
  }
  if (original === undefined) return { refused: "the original body went while it was being revealed (replayed and pruned, or erased); nothing was shown" };
  return { record: { message_id: r.message_id, reason: r.reason, detail: r.detail, received_at: r.received_at, replayed_at: r.replayed_at }, original };
}
