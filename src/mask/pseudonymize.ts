import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, utf8ToBytes } from "@noble/hashes/utils.js";

/** The PII kinds masq pseudonymises. The kind is part of the HMAC input, so an ip and a device id never collide. */
export type PiiKind = "ip" | "device_id";

/**
 * Keyed, deterministic pseudonyms: lowercase hex of HMAC-SHA256(key, kind + ":" + value).
 * Never a plain hash: an IPv4 address (2^32) or an SSN-shaped device id (10^9) is brute-forced in minutes
 * from an unkeyed SHA-256; without the key it cannot be.
 */
export interface Pseudonymizer {
  pseudonymize(kind: PiiKind, value: string): string;
}

export function createPseudonymizer(key: Uint8Array): Pseudonymizer {
  // The keyed inner/outer states are computed once; each call clones them instead of re-deriving from the key.
  const base = hmac.create(sha256, key);
  return {
    pseudonymize(kind, value) {
      const mac = base.clone();
      mac.update(utf8ToBytes(`${kind}:${value}`));
      return bytesToHex(mac.digest());
    },
  };
}
