import type pg from "pg";
import type { PiiKind } from "../../src/ingest/pseudonymize.ts";
import { open, vaultAad } from "../../src/keys/data-keys.ts";
import { unwrapDataKeys } from "../../src/keys/unwrap-data-keys.ts";
import type { KeyProvider } from "../../src/keys/key-provider.ts";

export interface VaultValue {
  kind: PiiKind;
  pseudonym: string;
  keyVersion: number;
  value: string;
}

/** Every vault value, decrypted as `masq unmask` does: the data key unwrapped by the provider, the row's binding checked. */
export async function decryptVault(pool: pg.Pool, provider: KeyProvider): Promise<VaultValue[]> {
  const { rows } = await pool.query<{ kind: PiiKind; pseudonym: string; key_version: number; data_key_id: string; nonce: Buffer; ciphertext: Buffer }>(
    "SELECT kind, pseudonym, key_version, data_key_id, nonce, ciphertext FROM masq.vault ORDER BY kind, pseudonym",
  );
  const keys = await unwrapDataKeys(
    pool,
    provider,
    rows.map((r) => r.data_key_id),
  );
  return rows.map((r) => ({
    kind: r.kind,
    pseudonym: r.pseudonym,
    keyVersion: r.key_version,
    value: open(keys.get(r.data_key_id)!, { nonce: r.nonce, ciphertext: r.ciphertext }, vaultAad(r.kind, r.pseudonym)).toString("utf8"),
  }));
}

/** The vault's stored bytes (which data key, nonce, ciphertext per row), to show a change left them alone. */
export async function vaultBytes(pool: pg.Pool): Promise<string[]> {
  const { rows } = await pool.query<{ r: string }>(
    "SELECT concat_ws(' ', kind, pseudonym, key_version, data_key_id, encode(nonce, 'hex'), encode(ciphertext, 'hex')) AS r FROM masq.vault ORDER BY kind, pseudonym",
  );
  return rows.map((x) => x.r);
}
