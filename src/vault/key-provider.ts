/**
 * The master key, behind one small interface: AWS KMS, or masq's local provider (a 256-bit key from the
 * environment or a file). Nothing else in masq knows which one is in use; both wrap keys in an envelope that is
 * bound to an encryption context, so a wrapped key copied to another row or purpose does not unwrap.
 */
export type KeyPurpose = "vault" | "pseudonym" | "audit";

/** What a wrapped key is for, and which key it is. Both providers bind it: unwrapping needs the same context. */
export interface KeyContext {
  purpose: KeyPurpose;
  /** data_keys.id for a vault data key; "v<version>" for a pseudonym key. */
  keyId: string;
}

export interface GeneratedKey {
  /** 32 random bytes. Held in memory only. */
  plaintext: Uint8Array;
  wrapped: Uint8Array;
  /** The master key that wrapped it (a KMS key ARN, or "local:<fingerprint>"). */
  masterKeyId: string;
}

export type ProviderName = "kms" | "local";

export interface KeyProvider {
  readonly name: ProviderName;
  /** The configured master key, resolved (a KMS alias becomes its key ARN). Checks that it is usable: fails fast. */
  currentMasterKeyId(signal?: AbortSignal): Promise<string>;
  /** A new AES-256 key, wrapped under the current master key: one call to the provider. */
  generateKey(context: KeyContext, signal?: AbortSignal): Promise<GeneratedKey>;
  unwrap(wrapped: Uint8Array, masterKeyId: string, context: KeyContext, signal?: AbortSignal): Promise<Uint8Array>;
  /** Re-wraps under the current master key. With KMS the key never leaves KMS in plaintext (ReEncrypt). */
  rewrap(wrapped: Uint8Array, masterKeyId: string, context: KeyContext, signal?: AbortSignal): Promise<{ wrapped: Uint8Array; masterKeyId: string }>;
  /** Who is calling, for the unmask audit: the AWS caller's ARN with KMS; undefined with the local provider. */
  callerIdentity(signal?: AbortSignal): Promise<string | undefined>;
  close(): void;
}

/** Called after every provider call, for metrics: the operation and whether it succeeded. */
export type ProviderCallObserver = (operation: string, ok: boolean) => void;

/** The encryption context both providers bind. Stable key order: the local provider uses it as associated data. */
export function encryptionContext(c: KeyContext): Record<string, string> {
  return { app: "masq", key_id: c.keyId, purpose: c.purpose };
}
