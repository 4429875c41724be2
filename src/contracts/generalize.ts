import { isIPv4 } from "node:net";
import { canonicalizeIp } from "../ingest/ip.ts";

/** The network of a canonical address (canonicalizeIp's form): "203.0.113.0/24", "2001:db8:1::/48". */
export function ipNetwork(canonical: string, ipv4Prefix: number, ipv6Prefix: number): string {
  if (isIPv4(canonical)) {
    const n = canonical.split(".").reduce((acc, octet) => acc * 256 + Number(octet), 0);
    const masked = ipv4Prefix === 0 ? 0 : n - (n % 2 ** (32 - ipv4Prefix));
    return `${[24, 16, 8, 0].map((shift) => Math.floor(masked / 2 ** shift) % 256).join(".")}/${ipv4Prefix}`;
  }
  const groups = expandIPv6(canonical);
  const masked = groups.map((g, i) => {
    const bits = Math.max(0, Math.min(16, ipv6Prefix - i * 16));
    return bits === 16 ? g : bits === 0 ? 0 : g & (0xffff << (16 - bits)) & 0xffff;
  });
  // Formatting through canonicalizeIp keeps one notation for a network and for an address (RFC 5952).
  return `${canonicalizeIp(masked.map((g) => g.toString(16)).join(":"))}/${ipv6Prefix}`;
}

/** The eight groups of an IPv6 address in canonical form (no embedded IPv4: canonicalizeIp folds those). */
function expandIPv6(canonical: string): number[] {
  const [head, tail] = canonical.split("::") as [string, string | undefined];
  const parse = (part: string | undefined) => (part === undefined || part === "" ? [] : part.split(":").map((h) => parseInt(h, 16)));
  const left = parse(head);
  const right = parse(tail);
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}

/** A timestamp cut to its hour ("2026-12-06T21:00:00Z") or day ("2026-12-06"), in UTC. */
export function timeBucket(at: Date, to: "hour" | "day"): string {
  const iso = at.toISOString();
  return to === "day" ? iso.slice(0, 10) : `${iso.slice(0, 13)}:00:00Z`;
}

/** The low end of the range of width `bucket` that holds n (37 with bucket 10 → 30; -3 → -10). */
export function numberBucket(n: number, bucket: number): number {
  return Math.floor(n / bucket) * bucket;
}

/**
 * ISO 8601 date-times with a zone (a time without one means a different instant on each machine), e.g.
 * "2026-12-06T21:04:05Z", "2026-12-06T21:04:05.123+01:00". Returns null for anything else.
 */
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})$/;

export function parseTimestamp(text: string): Date | null {
  if (!TIMESTAMP.test(text)) return null;
  // Date keeps milliseconds; finer digits (microseconds, as many producers write) are cut, not rounded.
  const ms = Date.parse(text.replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(ms) ? null : new Date(ms);
}
