import { ConfigError } from "../errors.ts";

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
