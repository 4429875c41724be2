import { createHmac } from "node:crypto";
import { randomBytes } from "node:crypto";
import { ConfigError, FatalError } from "../errors.ts";
import { IntegrityError, open, seal, NONCE_BYTES } from "./aead.ts";
import { encryptionContext, type GeneratedKey, type KeyContext, type KeyProvider, type ProviderCallObserver } from "./key-provider.ts";

const MAGIC = Buffer.from("MQL1");
const FINGERPRINT_BYTES = 8;

/** A local master key's public name: "local:" + 16 hex digits of HMAC-SHA256(key, "masq master key id"). */
export function localMasterKeyId(key: Uint8Array): string {
  return `local:${fingerprint(key).toString("hex")}`;
}

function fingerprint(key: Uint8Array): Buffer {
  return createHmac("sha256", key).update("masq master key id").digest().subarray(0, FINGERPRINT_BYTES);
}

/**
 * The local provider: the same envelope as KMS, for development, air-gapped installs and the demo. A wrapped key is
 * "MQL1" ‖ master-key fingerprint (8 bytes) ‖ nonce (12) ‖ AES-256-GCM(master, key, aad = encryption context).
 * The fingerprint picks the master key: the current one (MASQ_MASTER_KEY) or an earlier one kept for rotation
 * (MASQ_MASTER_KEY_PREVIOUS).
 */
export class LocalKeyProvider implements KeyProvider {
  readonly name = "local" as const;
  private readonly current: Uint8Array;
  private readonly byFingerprint = new Map<string, Uint8Array>();
  private readonly observe: ProviderCallObserver | undefined;

  constructor(current: Uint8Array, previous: readonly Uint8Array[] = [], observe?: ProviderCallObserver) {
    this.current = current;
    this.observe = observe;
    for (const k of [current, ...previous]) this.byFingerprint.set(fingerprint(k).toString("hex"), k);
  }

  currentMasterKeyId(): Promise<string> {
    return Promise.resolve(localMasterKeyId(this.current));
  }

  generateKey(context: KeyContext): Promise<GeneratedKey> {
    const plaintext = new Uint8Array(randomBytes(32));
    this.observe?.("GenerateDataKey", true);
    return Promise.resolve({ plaintext, wrapped: this.wrap(plaintext, context), masterKeyId: localMasterKeyId(this.current) });
  }

  unwrap(wrapped: Uint8Array, masterKeyId: string, context: KeyContext): Promise<Uint8Array> {
    try {
      const w = Buffer.from(wrapped);
      if (w.length < MAGIC.length + FINGERPRINT_BYTES + NONCE_BYTES + 16 || !w.subarray(0, 4).equals(MAGIC)) {
        throw new FatalError(`a ${context.purpose} key is not in the local provider's format (wrapped by ${masterKeyId}?)`);
      }
      const fp = w.subarray(4, 4 + FINGERPRINT_BYTES).toString("hex");
      const master = this.byFingerprint.get(fp);
      if (master === undefined) {
        throw new ConfigError(
          "MASQ_MASTER_KEY",
          `the ${context.purpose} key ${context.keyId} is wrapped under master key local:${fp}, which is neither MASQ_MASTER_KEY nor in MASQ_MASTER_KEY_PREVIOUS`,
        );
      }
      const nonceAt = 4 + FINGERPRINT_BYTES;
      const key = open(master, { nonce: w.subarray(nonceAt, nonceAt + NONCE_BYTES), ciphertext: w.subarray(nonceAt + NONCE_BYTES) }, aad(context));
      this.observe?.("Decrypt", true);
      return Promise.resolve(new Uint8Array(key));
    } catch (err) {
      this.observe?.("Decrypt", false);
      if (err instanceof IntegrityError) {
        return Promise.reject(new FatalError(`the ${context.purpose} key ${context.keyId} does not unwrap: its wrapped form or its binding was altered`));
      }
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  async rewrap(wrapped: Uint8Array, masterKeyId: string, context: KeyContext): Promise<{ wrapped: Uint8Array; masterKeyId: string }> {
    const key = await this.unwrap(wrapped, masterKeyId, context);
    try {
      this.observe?.("ReEncrypt", true);
      return { wrapped: this.wrap(key, context), masterKeyId: localMasterKeyId(this.current) };
    } finally {
      key.fill(0);
    }
  }

  callerIdentity(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }

  close(): void {
    this.current.fill(0);
    for (const k of this.byFingerprint.values()) k.fill(0);
  }

  private wrap(key: Uint8Array, context: KeyContext): Uint8Array {
    const s = seal(this.current, key, aad(context));
    return new Uint8Array(Buffer.concat([MAGIC, fingerprint(this.current), s.nonce, s.ciphertext]));
  }
}

function aad(context: KeyContext): Buffer {
  return Buffer.from(JSON.stringify(encryptionContext(context)));
}
