/**
 * Keyed pseudonyms of PII values, and the text forms of the keys behind them (the pseudonym key, and the local master
 * key, which is written the same way). Pure: a prepare thread, the main thread and the tests use the same functions.
 */
import { createHmac, createSecretKey } from "node:crypto";
import { ConfigError } from "../errors.ts";

/** The PII kinds of the login event. The kind is part of the HMAC input, so an ip and a device id never collide. */
export type PiiKind = "ip" | "device_id";

/** A contract's kind (docs/contracts.md): the login's two, or any other `^[a-z][a-z0-9_]{0,62}$`. */
export type Kind = string;

/** What makes a kind, as masq.vault's check (106_contract_tables.sql) and contract.schema.json say. */
export const KIND_PATTERN = /^[a-z][a-z0-9_]{0,62}$/;

/**
 * Keyed, deterministic pseudonyms: lowercase hex of HMAC-SHA256(key, kind + ":" + value), the input in UTF-8 (a lone
 * surrogate as U+FFFD, as TextEncoder encodes it).
 * Never a plain hash: an IPv4 address (2^32) or an SSN-shaped device id (10^9) is brute-forced in minutes
 * from an unkeyed SHA-256; without the key it cannot be.
 */
export interface Pseudonymizer {
  pseudonymize(kind: Kind, value: string): string;
}

export function createPseudonymizer(key: Uint8Array): Pseudonymizer {
  // node:crypto (OpenSSL) rather than a JavaScript HMAC: 3.2 against 8.7 µs of CPU for a row's two. The key is
  // imported once, as a KeyObject (a copy the caller's buffer does not share).
  const secret = createSecretKey(key);
  return {
    pseudonymize(kind, value) {
      return createHmac("sha256", secret).update(`${kind}:${value}`, "utf8").digest("hex");
    },
  };
}

export const MIN_KEY_BYTES = 32;

/**
 * Parses the HMAC key from its text form: hex, or base64 (standard or url-safe). A value made only of hex digits
 * is read as hex; "hex:" and "base64:" prefixes make the choice explicit. The value never appears in an error.
 */
export function parsePseudonymKey(text: string, setting = "MASQ_PSEUDONYM_KEY"): Uint8Array {
  const bytes = parseKeyBytes(text, setting);
  if (bytes.length < MIN_KEY_BYTES) {
    throw new ConfigError(setting, `must be at least ${MIN_KEY_BYTES} bytes (got ${bytes.length}); generate one with: openssl rand -hex 32`);
  }
  return bytes;
}

/** A 256-bit master key for the local key provider (MASQ_MASTER_KEY): exactly 32 bytes, hex or base64. */
export function parseMasterKey(text: string, setting = "MASQ_MASTER_KEY"): Uint8Array {
  const bytes = parseKeyBytes(text, setting);
  if (bytes.length !== 32) throw new ConfigError(setting, `must be exactly 32 bytes (got ${bytes.length}); generate one with: openssl rand -hex 32`);
  return bytes;
}

function parseKeyBytes(text: string, setting: string): Uint8Array {
  const value = text.trim();
  let bytes: Buffer;
  if (value.startsWith("hex:") || (!value.startsWith("base64:") && /^[0-9a-fA-F]+$/.test(value))) {
    const hex = value.replace(/^hex:/, "");
    if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new ConfigError(setting, "is not valid hex");
    bytes = Buffer.from(hex, "hex");
  } else {
    const b64 = value.replace(/^base64:/, "");
    if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(b64)) throw new ConfigError(setting, "is neither hex nor base64");
    bytes = Buffer.from(b64, "base64");
  }
  return new Uint8Array(bytes);
}
