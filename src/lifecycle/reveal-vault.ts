import type pg from "pg";
import { ConfigError, FatalError } from "../errors.ts";
import type { PiiKind, Pseudonymizer } from "../mask/pseudonymize.ts";
import { classifyPgError } from "../sink/pg-errors.ts";
import { query } from "../db/query.ts";
import { inTransaction } from "../sink/transaction.ts";
import { IntegrityError, open } from "../vault/aead.ts";
import { loadDataKeys } from "../vault/data-keys.ts";
import type { KeyProvider } from "../vault/key-provider.ts";
import { pseudonymKeyVersion } from "../vault/pseudonym-keys.ts";
import type { Unmasked } from "./unmask-output.ts";
import { vaultAad } from "../vault/vault-aad.ts";
import { openAuditKey } from "./audit-key.ts";
import { flagSuspect } from "./flag-suspect.ts";
import { sealAudit } from "./seal-audit.ts";

export interface RevealRequest {
  reason: string;
  /** What was asked, as the audit row records it. */
  selector: Record<string, unknown>;
  /** What the client says about itself (OS user, AWS caller), labelled client-reported in the row. */
  client: Record<string, unknown>;
  wanted: readonly { kind: PiiKind; pseudonym: string }[];
  limit: number;
  /** MASQ_PSEUDONYM_KEY, for the check of values under a key given from outside. */
  pseudonymKeyOverride: Uint8Array | undefined;
}

export interface RevealResult {
  /** Values that decrypted and are their pseudonym's: safe to show. */
  values: Unmasked[];
  /** Values that decrypted but are not HMAC(key, kind:value) of their pseudonym: planted, withheld, marked suspect. */
  forged: { kind: PiiKind; pseudonym: string }[];
  found: Set<string>;
  more: boolean;
  auditSeq: string;
}

interface Cipher {
  kind: PiiKind;
  pseudonym: string;
  key_version: number;
  data_key_id: string;
  nonce: Buffer;
  ciphertext: Buffer;
}

/**
 * The audited read of the vault, in the order that makes the audit exact:
 *   0. the keys the asked values need (data keys, pseudonym keys, the audit key) are unwrapped first, so that a wrong
 *      master key stops here, before any audit row claims a value was revealed;
 *   1. one transaction: masq.audit_reveal_vault records which values the vault holds and hands out, the row is
 *      sealed with its MAC, COMMIT;
 *   2. masq.vault_ciphertexts hands out the ciphertexts that committed row names, and nothing else.
 * Every value is then checked against its pseudonym (HMAC of the pseudonym key of its version): a value planted under
 * a pseudonym that is not its own is withheld and flagged (with an audit row of its own), so that ingestion replaces
 * it with the true value.
 */
export async function revealVault(pool: pg.Pool, provider: KeyProvider, req: RevealRequest): Promise<RevealResult> {
  const candidates = await vaultEntries(pool, req.wanted, req.limit + 1);
  const dataKeys = await unwrapDataKeys(pool, provider, candidates.map((c) => c.data_key_id));
  const pseudonymizers = new Map<number, Pseudonymizer>();
  const auditKey = await openAuditKey(pool, provider);
  try {
    for (const v of new Set(candidates.map((c) => c.key_version))) {
      pseudonymizers.set(v, (await pseudonymKeyVersion(pool, provider, v, undefined, req.pseudonymKeyOverride)).pseudonymizer);
    }
    const { seq, more } = await inTransaction(pool, async (client) => {
      const r = await query<{ seq: string; more: boolean }>(client, "SELECT seq::text AS seq, more FROM masq.audit_reveal_vault($1, $2, $3, $4, $5, $6, $7)", [
        req.reason,
        JSON.stringify(req.selector),
        JSON.stringify(req.client),
        req.wanted.map((w) => w.kind),
        req.wanted.map((w) => w.pseudonym),
        req.limit,
        auditKey.version,
      ]);
      await sealAudit(client, auditKey, r.rows[0]!.seq);
      return r.rows[0]!;
    });
    const rows = (await query<Cipher>(pool, "SELECT kind, pseudonym, key_version, data_key_id, nonce, ciphertext FROM masq.vault_ciphertexts($1)", [seq])).rows;
    // A rotation between step 0 and step 2 can move a value to a data key or pseudonym key not unwrapped yet.
    const lateKeys = rows.map((r) => r.data_key_id).filter((id) => !dataKeys.has(id));
    for (const [id, k] of await unwrapDataKeys(pool, provider, lateKeys)) dataKeys.set(id, k);
    for (const v of new Set(rows.map((r) => r.key_version))) {
      if (!pseudonymizers.has(v)) pseudonymizers.set(v, (await pseudonymKeyVersion(pool, provider, v, undefined, req.pseudonymKeyOverride)).pseudonymizer);
    }
    const values: Unmasked[] = [];
    const forged: { kind: PiiKind; pseudonym: string }[] = [];
    for (const r of rows) {
      const key = dataKeys.get(r.data_key_id);
      if (key === undefined) throw new FatalError(`the data key of ${r.kind} ${r.pseudonym} is missing from masq.data_keys`);
      let value: string;
      try {
        value = open(key, { nonce: r.nonce, ciphertext: r.ciphertext }, vaultAad(r.kind, r.pseudonym)).toString("utf8");
      } catch (err) {
        if (err instanceof IntegrityError) throw new IntegrityError(`the vault entry of ${r.kind} ${r.pseudonym} does not decrypt: it was altered, moved from another row, or its data key is not the one that sealed it`);
        throw err;
      }
      if (pseudonymizers.get(r.key_version)!.pseudonymize(r.kind, value) === r.pseudonym) values.push({ kind: r.kind, pseudonym: r.pseudonym, value });
      else forged.push({ kind: r.kind, pseudonym: r.pseudonym });
    }
    await flagSuspect(pool, auditKey, seq, null, forged);
    return { values, forged, found: new Set(rows.map((r) => r.pseudonym)), more, auditSeq: seq };
  } finally {
    auditKey.key.fill(0);
    for (const k of dataKeys.values()) k.fill(0);
  }
}

/** Step 0: the non-secret columns of the asked rows, to learn which keys they need. */
async function vaultEntries(pool: pg.Pool, wanted: RevealRequest["wanted"], limit: number): Promise<{ key_version: number; data_key_id: string }[]> {
  if (wanted.length === 0) return [];
  return (
    await query<{ key_version: number; data_key_id: string }>(
      pool,
      `SELECT v.key_version, v.data_key_id FROM masq.vault v
       JOIN unnest($1::text[], $2::text[]) AS w(kind, pseudonym) ON v.kind = w.kind AND v.pseudonym = w.pseudonym
       ORDER BY v.kind, v.pseudonym LIMIT $3`,
      [wanted.map((w) => w.kind), wanted.map((w) => w.pseudonym), limit],
    )
  ).rows;
}

/** Postgres errors come raw from loadDataKeys; the provider's are masq's already (ConfigError included). */
export async function unwrapDataKeys(pool: pg.Pool, provider: KeyProvider, ids: string[]): Promise<Map<string, Uint8Array>> {
  try {
    return await loadDataKeys(pool, provider, ids);
  } catch (err) {
    throw err instanceof ConfigError || err instanceof FatalError || typeof (err as { code?: unknown }).code !== "string" ? err : classifyPgError(err);
  }
}
