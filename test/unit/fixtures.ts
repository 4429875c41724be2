/** Shared inputs of the unit tests: the sample message from the brief and a fixed, public test key. */

/** The sample login event, as the producer sends it. */
export const SAMPLE = {
  user_id: "424cdd21-063a-43a7-b91b-7ca1a833afae",
  app_version: "2.3.0",
  device_type: "android",
  ip: "199.172.111.135",
  locale: "RU",
  device_id: "593-47-5928",
} as const;

export const SAMPLE_BODY =
  '{"user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0", "device_type": "android", "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}';

/** The sample with some fields replaced or (value undefined) removed, as a message body. */
export function sampleWith(changes: Record<string, unknown>): string {
  const body: Record<string, unknown> = { ...SAMPLE };
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined) delete body[k];
    else body[k] = v;
  }
  return JSON.stringify(body);
}

/** Bytes 0x00..0x1f: the key the HMAC vectors below were computed with. */
export const TEST_KEY_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
export const TEST_KEY = Uint8Array.from({ length: 32 }, (_, i) => i);

/**
 * HMAC-SHA256(TEST_KEY, kind + ":" + value), computed outside masq with
 *   printf '%s' 'ip:199.172.111.135' | openssl dgst -sha256 -mac HMAC -macopt hexkey:000102…1f
 */
export const VECTORS = {
  sampleIp: { kind: "ip", value: "199.172.111.135", hmac: "8884675af88fb989dbea9740053cb185c22b14672ef71318017b3b3b8df04b16" },
  sampleDeviceId: { kind: "device_id", value: "593-47-5928", hmac: "08257e30157faab67c5ff6ea2b011c511bc32af2e709c963f887ca97d49b7f96" },
  ipv6: { kind: "ip", value: "2001:db8::1", hmac: "bb32f5149eadffd3caceadf8273f381b2ceb275edabd17ec5d495f9ff0c7c9ae" },
} as const;
