import type { PiiKind } from "../ingest/pseudonymize.ts";

/**
 * Associated data: what a ciphertext is bound to. A vault value decrypts only as the value of its own (kind,
 * pseudonym) row, and a quarantined body only as the body of its own message: swapping ciphertexts between rows,
 * or between kinds, fails authentication instead of revealing the wrong person's data.
 */
/** A row of `masq.vault` as read by the unmask role: one distinct value, sealed under a data key. */
export interface VaultRow {
  kind: PiiKind;
  pseudonym: string;
  data_key_id: string;
  nonce: Buffer;
  ciphertext: Buffer;
}

export function vaultAad(kind: PiiKind, pseudonym: string): Buffer {
  return Buffer.from(`masq/vault/v1\0${kind}\0${pseudonym}`);
}

export function quarantineBodyAad(messageId: string): Buffer {
  return Buffer.from(`masq/quarantine-body/v1\0${messageId}`);
}
