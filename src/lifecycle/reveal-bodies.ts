import type pg from "pg";
import { FatalError } from "../errors.ts";
import { inTransaction } from "../sink/transaction.ts";
import { open } from "../vault/aead.ts";
import type { KeyProvider } from "../vault/key-provider.ts";
import { quarantineBodyAad } from "../vault/vault-aad.ts";
import type { AuditKey } from "./audit-key.ts";
import { unwrapDataKeys } from "./reveal-vault.ts";
import { query } from "../db/query.ts";
import { sealAudit } from "./seal-audit.ts";

/** The audited pair of functions (step 1, step 2) a reveal of originals goes through; they differ in the action recorded. */
export interface BodyReveal {
  audit: string;
  originals: string;
}

/** `masq quarantine replay` (action 'replay'). */
export const REPLAY: BodyReveal = { audit: "masq.audit_reveal_bodies", originals: "masq.quarantine_originals" };
/** `masq quarantine show --original` (action 'quarantine-original', migration 008). */
export const SHOW_ORIGINAL: BodyReveal = { audit: "masq.audit_quarantine_original", originals: "masq.quarantine_original" };

/**
 * The original bodies of these quarantine records, decrypted, for `masq quarantine replay` and `show --original`: audited like an unmask
 * (lifecycle/reveal-vault.ts). The data keys are unwrapped first (a wrong master key records nothing), then one
 * committed, sealed audit row names the records whose originals are handed out, then masq.quarantine_originals
 * hands out exactly those. One provider call per data key.
 */
export async function revealBodies(
  pool: pg.Pool,
  provider: KeyProvider,
  auditKey: AuditKey,
  req: { reason: string; selector: Record<string, unknown>; client: Record<string, unknown>; messageIds: readonly string[] },
  reveal: BodyReveal = REPLAY,
): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (req.messageIds.length === 0) return out;
  const ids = (
    await query<{ id: string }>(pool, "SELECT DISTINCT body_data_key_id AS id FROM masq.quarantine WHERE message_id = ANY($1) AND body_data_key_id IS NOT NULL", [
      req.messageIds,
    ])
  ).rows.map((r) => r.id);
  const keys = await unwrapDataKeys(pool, provider, ids);
  try {
    const seq = await inTransaction(pool, async (client) => {
      const r = await query<{ seq: string }>(client, `SELECT ${reveal.audit}($1, $2, $3, $4, $5)::text AS seq`, [
        req.reason,
        JSON.stringify(req.selector),
        JSON.stringify(req.client),
        req.messageIds,
        auditKey.version,
      ]);
      await sealAudit(client, auditKey, r.rows[0]!.seq);
      return r.rows[0]!.seq;
    });
    const rows = (
      await query<{ message_id: string; body_data_key_id: string; body_nonce: Buffer; body_ciphertext: Buffer }>(
        pool,
        `SELECT message_id, body_data_key_id, body_nonce, body_ciphertext FROM ${reveal.originals}($1)`,
        [seq],
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
