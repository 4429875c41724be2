import { createCipheriv, createDecipheriv, randomBytes, type KeyObject } from "node:crypto";

export const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** Raised when a ciphertext does not authenticate: tampered, a wrong key, or a wrong associated-data binding. */
export class IntegrityError extends Error {
  override name = "IntegrityError";
}

export interface Sealed {
  nonce: Buffer;
  /** AES-256-GCM ciphertext followed by its 16-byte tag. */
  ciphertext: Buffer;
}

/**
 * AES-256-GCM with a random 96-bit nonce. A data key encrypts a bounded number of values (MASQ_DATA_KEY_MAX_USES,
 * far below the 2^32 that random nonces allow), so nonces never repeat in practice.
 */
export function seal(key: Uint8Array | KeyObject, plaintext: Uint8Array, aad: Uint8Array, nonce: Buffer = randomBytes(NONCE_BYTES)): Sealed {
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(aad);
  const body = cipher.update(plaintext);
  cipher.final();
  return { nonce, ciphertext: Buffer.concat([body, cipher.getAuthTag()]) };
}

/** Random nonces for n encryptions, drawn at once (one call to the CSPRNG per batch instead of one per value). */
export function nonces(n: number): Buffer[] {
  const pool = randomBytes(n * NONCE_BYTES);
  return Array.from({ length: n }, (_, i) => pool.subarray(i * NONCE_BYTES, (i + 1) * NONCE_BYTES));
}

export function open(key: Uint8Array | KeyObject, sealed: Sealed, aad: Uint8Array): Buffer {
  if (sealed.nonce.length !== NONCE_BYTES || sealed.ciphertext.length < TAG_BYTES) throw new IntegrityError("malformed ciphertext");
  const decipher = createDecipheriv("aes-256-gcm", key, sealed.nonce);
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.ciphertext.subarray(sealed.ciphertext.length - TAG_BYTES));
  const body = decipher.update(sealed.ciphertext.subarray(0, sealed.ciphertext.length - TAG_BYTES));
  try {
    return Buffer.concat([body, decipher.final()]);
  } catch {
    body.fill(0);
    throw new IntegrityError("ciphertext failed authentication: it was altered, or the key or its binding is wrong");
  }
}
