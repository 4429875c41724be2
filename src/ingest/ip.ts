import { isIPv4, isIPv6 } from "node:net";

/**
 * Canonical text of an IP address, so that equal addresses get equal pseudonyms:
 *   IPv4 → dotted decimal without leading zeros ("010.0.0.1" is rejected by isIPv4, as it is ambiguous);
 *   IPv6 → RFC 5952 (lowercase, no leading zeros, the longest run of two or more zero groups as "::");
 *   IPv4-mapped IPv6 (::ffff:a.b.c.d) → the IPv4 address itself: it is the same host;
 *   IPv4-compatible IPv6 (::a.b.c.d, deprecated by RFC 4291 §2.5.5.1 but still printed by some stacks) → the IPv4
 *   address too, when its first octet is not 0: that excludes :: and ::1 (unspecified, loopback), which are not
 *   IPv4 hosts, and the rest of ::/104, which no IPv4 host uses. The notation does not matter: ::cb00:711d folds
 *   like ::203.0.113.29.
 * Returns null for anything else, including zone ids ("fe80::1%eth0"), which name an interface, not a host.
 */
export function canonicalizeIp(text: string): string | null {
  if (isIPv4(text)) return text;
  if (!isIPv6(text) || text.includes("%")) return null;
  const groups = parseIPv6(text);
  if (groups === null) return null;
  if (isIPv4Mapped(groups) || isIPv4Compatible(groups)) {
    const hi = groups[6]!;
    const lo = groups[7]!;
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return formatIPv6(groups);
}

function isIPv4Mapped(groups: number[]): boolean {
  return groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
}

function isIPv4Compatible(groups: number[]): boolean {
  return groups.slice(0, 6).every((g) => g === 0) && groups[6]! >= 0x100;
}

/** Eight 16-bit groups of an address that isIPv6 has already accepted. */
function parseIPv6(text: string): number[] | null {
  let body = text;
  const tail: number[] = [];
  const lastColon = body.lastIndexOf(":");
  const last = body.slice(lastColon + 1);
  if (last.includes(".")) {
    const octets = last.split(".").map(Number);
    tail.push((octets[0]! << 8) | octets[1]!, (octets[2]! << 8) | octets[3]!);
    body = body.slice(0, lastColon + 1) + "0";
  }
  const [head, rest] = body.split("::") as [string, string | undefined];
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((h) => parseInt(h, 16)));
  const left = parse(head);
  const right = rest === undefined ? [] : parse(rest);
  if (tail.length > 0) (right.length > 0 ? right : left).pop();
  const fill = 8 - tail.length - left.length - right.length;
  if (rest === undefined ? fill !== 0 : fill < 1) return null;
  return [...left, ...new Array<number>(fill).fill(0), ...right, ...tail];
}

function formatIPv6(groups: number[]): string {
  // Find the longest run of zero groups (length ≥ 2); the first one wins a tie (RFC 5952 §4.2.3).
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}
