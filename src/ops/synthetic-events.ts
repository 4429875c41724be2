/**
 * Synthetic login events shaped like the real queue, for the demo, the tests and the benchmark: repeated devices and
 * IPs (so duplicate groups exist), a mix of IPv4 and IPv6, null locales, and a share of malformed messages of every
 * kind seen in production. Each event says what masq should make of it, so tests can assert exact counts.
 * Deterministic for a given seed. Imports nothing: the benchmark's measured process loads it.
 */
export type SyntheticKind =
  | "valid"
  | "valid_null_locale"
  | "missing_field"
  | "numeric_app_version"
  | "not_json"
  | "unrelated_keys"
  | "invalid_ip";

export interface SyntheticEvent {
  body: string;
  kind: SyntheticKind;
  /** The reason code masq should quarantine it with, or null when it should become a row. */
  expectedReason: string | null;
}

const MALFORMED: { kind: SyntheticKind; reason: string }[] = [
  { kind: "missing_field", reason: "missing_field" },
  { kind: "numeric_app_version", reason: "wrong_type" },
  { kind: "not_json", reason: "invalid_json" },
  { kind: "unrelated_keys", reason: "missing_field" },
  { kind: "invalid_ip", reason: "invalid_ip" },
];

const LOCALES = ["RU", "US", "DE", "IN", "BR", "PH", "ID", "NG", "FR", "JP", "MX", "GB"];
const REQUIRED = ["user_id", "app_version", "device_type", "ip", "device_id"] as const;

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function generateEvents(count: number, opts: { seed?: number; malformedRate?: number } = {}): SyntheticEvent[] {
  const rnd = mulberry32(opts.seed ?? 42);
  const malformedRate = opts.malformedRate ?? 0.05;
  const int = (n: number) => Math.floor(rnd() * n);
  const hex = (n: number) => Array.from({ length: n }, () => int(16).toString(16)).join("");
  const pad = (v: number, w: number) => String(v).padStart(w, "0");
  // Skewed picks: a few devices and addresses (shared phones, NAT gateways) recur often, most rarely.
  const skewed = <T>(pool: T[]) => pool[Math.floor(pool.length * rnd() ** 3)]!;

  const devices = Array.from({ length: Math.max(1, Math.floor(count / 4)) }, () => `${pad(int(1000), 3)}-${pad(int(100), 2)}-${pad(int(10000), 4)}`);
  const ips = Array.from({ length: Math.max(1, Math.floor(count / 6)) }, () =>
    rnd() < 0.85
      ? `${1 + int(223)}.${int(256)}.${int(256)}.${1 + int(254)}`
      : `2001:db8:${hex(4)}:${hex(4)}::${hex(4)}`.replace(/:0+([0-9a-f])/g, ":$1"),
  );
  const users = Array.from({ length: Math.max(1, Math.floor(count / 2)) }, () => `${hex(8)}-${hex(4)}-4${hex(3)}-a${hex(3)}-${hex(12)}`);

  const events: SyntheticEvent[] = [];
  for (let i = 0; i < count; i++) {
    const nullLocale = rnd() < 0.03;
    const event: Record<string, unknown> = {
      user_id: skewed(users),
      app_version: rnd() < 0.2 ? `0.${int(100)}` : `${int(6)}.${int(10)}.${int(20)}`,
      device_type: rnd() < 0.55 ? "android" : "ios",
      ip: skewed(ips),
      locale: nullLocale ? null : LOCALES[int(LOCALES.length)],
      device_id: skewed(devices),
    };
    if (rnd() >= malformedRate) {
      events.push({ body: JSON.stringify(event), kind: nullLocale ? "valid_null_locale" : "valid", expectedReason: null });
      continue;
    }
    const bad = MALFORMED[int(MALFORMED.length)]!;
    let body: string;
    switch (bad.kind) {
      case "missing_field": {
        delete event[REQUIRED[int(REQUIRED.length)]!];
        body = JSON.stringify(event);
        break;
      }
      case "numeric_app_version":
        body = JSON.stringify({ ...event, app_version: 2 + int(5) / 10 });
        break;
      case "not_json":
        body = `user_id=${String(event.user_id)}; ip=${String(event.ip)}; truncated`;
        break;
      case "unrelated_keys":
        body = JSON.stringify({ foo: "oops_wrong_msg_format", bar: String(int(1000)) });
        break;
      default:
        body = JSON.stringify({ ...event, ip: `${256 + int(700)}.${int(256)}.${int(256)}.${int(256)}` });
    }
    events.push({ body, kind: bad.kind, expectedReason: bad.reason });
  }
  return events;
}
