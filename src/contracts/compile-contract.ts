/**
 * A contract compiled once into plain functions: each field's parser and treatment decided at compile time, so nothing
 * of the YAML is looked at per message. The generalizations (an address's network, a time's hour or day, a number's
 * bucket) are here too, pure.
 */
import { isIPv4 } from "node:net";
import { canonicalizeIp, encodeAppVersion, parseIPv6, type ReasonCode } from "../ingest/login-event.ts";
import { createPseudonymizer } from "../ingest/pseudonymize.ts";
import type { Contract, EventSpec, FieldSpec, FieldType } from "./contract.ts";

/** Keyed HMAC by kind: the same function, key and input as today's pseudonyms (ingest/pseudonymize.ts). */
export interface ContractKeys {
  pseudonymize(kind: string, value: string): string;
}

export function contractKeys(key: Uint8Array): ContractKeys {
  const p = createPseudonymizer(key);
  // The kind is only the HMAC input's prefix: any kind a contract declares works as "ip" and "device_id" do.
  return { pseudonymize: (kind, value) => p.pseudonymize(kind, value) };
}

/**
 * Why applyContract refuses an event: today's reason codes for a message (db_rejected and unprocessable are decided
 * later, by the database and the runner), and those only contracts give.
 */
export type ContractReason = Exclude<ReasonCode, "db_rejected" | "unprocessable"> | (typeof CONTRACT_REASON_CODES)[number];

/** The reason codes only a contract gives (masq run with MASQ_CONTRACT), beside login's (REASON_CODES). */
export const CONTRACT_REASON_CODES = ["invalid_timestamp", "unknown_event", "unclassified_field"] as const;

export type RowValue = string | number | boolean | null;

export interface VaultEntry {
  kind: string;
  pseudonym: string;
  /** The value as it was pseudonymised (an IP in canonical form). Plain PII: for the vault only. */
  original: string;
}

/** What a field's value became after its checks: text, a number, a boolean or an instant. */
type Parsed = string | number | boolean | Date;

/** One field, with everything decided at compile time. */
export interface CompiledField {
  /** Its place in CompiledEvent.fields: a message's values are held in an array by this index. */
  index: number;
  path: string;
  /** Where in the event; undefined for a message field ($sent_at, $sns.*), read from the message. */
  segments: string[] | undefined;
  type: FieldType;
  required: boolean;
  maxLength: number | undefined;
  /** A checked value from its JSON value (already known to have the right JSON type), or null when it is invalid. */
  parse: ((value: unknown) => Parsed | null) | undefined;
  /** The reason an event is refused when parse finds its value invalid. */
  invalid: ContractReason;
  /** The column's value; pushes a vault entry for a pseudonymised one. Undefined for a dropped field. */
  treat: ((value: Parsed, keys: ContractKeys, vault: VaultEntry[]) => RowValue) | undefined;
  column: string | undefined;
}

/** The names an event's object may hold: a leaf is a declared field, a branch holds declared fields below it. */
export type FieldTree = Map<string, FieldTree | "leaf">;

export interface CompiledEvent {
  name: string;
  table: string;
  subject: string;
  envelope: "none" | "sns";
  fields: CompiledField[];
  /** Undefined when unknown fields are dropped (`unknown: drop`): the event is then not walked at all. */
  tree: FieldTree | undefined;
  /** The fields each phase of checks visits, in the contract's order. */
  requiredFields: CompiledField[];
  textFields: CompiledField[];
  boundedFields: CompiledField[];
  parsedFields: CompiledField[];
  storedFields: CompiledField[];
}

export interface CompiledContract {
  events: CompiledEvent[];
  /** The one event type that takes every event (`match: all`). */
  matchAll: CompiledEvent | undefined;
  /** Discriminator path → its value → the event type. */
  discriminators: Map<string, { segments: string[]; byValue: Map<string, CompiledEvent> }>;
  unwrapsSns: boolean;
}

/** Builds the functions that apply a contract, once: nothing of the YAML is looked at per message. */
export function compileContract(contract: Contract): CompiledContract {
  const events = contract.events.map(compileEvent);
  const discriminators: CompiledContract["discriminators"] = new Map();
  let matchAll: CompiledEvent | undefined;
  contract.events.forEach((spec, i) => {
    if ("all" in spec.match) matchAll = events[i];
    else {
      const d = discriminators.get(spec.match.field) ?? { segments: spec.match.field.split("."), byValue: new Map() };
      d.byValue.set(spec.match.equals, events[i]!);
      discriminators.set(spec.match.field, d);
    }
  });
  return { events, matchAll, discriminators, unwrapsSns: events.some((e) => e.envelope === "sns") };
}

function compileEvent(spec: EventSpec): CompiledEvent {
  const fields = spec.fields.map(compileField);
  const isText = (f: CompiledField) => f.type === "string" || f.type === "ip" || f.type === "semver" || f.type === "timestamp";
  return {
    name: spec.name,
    table: spec.table,
    subject: spec.subject,
    envelope: spec.envelope,
    fields,
    tree: spec.unknown === "drop" ? undefined : fieldTree(spec.fields),
    requiredFields: fields.filter((f) => f.required && f.segments !== undefined),
    textFields: fields.filter(isText),
    boundedFields: fields.filter((f) => f.maxLength !== undefined),
    parsedFields: fields.filter((f) => f.parse !== undefined),
    storedFields: fields.filter((f) => f.treat !== undefined),
  };
}

function fieldTree(fields: FieldSpec[]): FieldTree {
  const root: FieldTree = new Map();
  for (const f of fields) {
    if (f.path.startsWith("$")) continue;
    const segments = f.path.split(".");
    let node = root;
    segments.forEach((s, i) => {
      if (i === segments.length - 1) node.set(s, "leaf");
      else {
        const next = node.get(s);
        if (next instanceof Map) node = next;
        else {
          const branch: FieldTree = new Map();
          node.set(s, branch);
          node = branch;
        }
      }
    });
  }
  return root;
}

function compileField(spec: FieldSpec, index: number): CompiledField {
  return {
    index,
    path: spec.path,
    segments: spec.path.startsWith("$") ? undefined : spec.path.split("."),
    type: spec.type,
    required: spec.required,
    maxLength: spec.maxLength,
    parse: parserOf(spec.type),
    invalid: spec.type === "ip" ? "invalid_ip" : spec.type === "semver" ? "invalid_app_version" : "invalid_timestamp",
    treat: treatmentOf(spec),
    column: spec.column,
  };
}

function parserOf(type: FieldType): CompiledField["parse"] {
  switch (type) {
    // Surrounding spaces are ignored where they cannot be meant: an address or a version (as today).
    case "ip":
      return (v) => canonicalizeIp((v as string).trim());
    case "semver":
      return (v) => encodeAppVersion((v as string).trim());
    case "timestamp":
      return (v) => (v instanceof Date ? v : parseTimestamp(v as string));
    default:
      return undefined;
  }
}

function treatmentOf(spec: FieldSpec): CompiledField["treat"] {
  const t = spec.treatment;
  switch (t.name) {
    case "drop":
      return undefined;
    case "keep":
      return (v) => (v instanceof Date ? v.toISOString() : v);
    case "pseudonymize": {
      const kind = t.kind;
      return (v, keys, vault) => {
        const original = String(v);
        const pseudonym = keys.pseudonymize(kind, original);
        vault.push({ kind, pseudonym, original });
        return pseudonym;
      };
    }
    case "hash": {
      const kind = t.kind;
      return (v, keys) => keys.pseudonymize(kind, String(v));
    }
    case "generalize": {
      if ("to" in t) {
        const to = t.to;
        return (v) => timeBucket(v as Date, to);
      }
      if ("bucket" in t) {
        const bucket = t.bucket;
        return (v) => numberBucket(v as number, bucket);
      }
      const { ipv4Prefix, ipv6Prefix } = t;
      return (v) => ipNetwork(v as string, ipv4Prefix, ipv6Prefix);
    }
  }
}

/** The network of a canonical address (canonicalizeIp's form): "203.0.113.0/24", "2001:db8:1::/48". */
export function ipNetwork(canonical: string, ipv4Prefix: number, ipv6Prefix: number): string {
  if (isIPv4(canonical)) {
    const n = canonical.split(".").reduce((acc, octet) => acc * 256 + Number(octet), 0);
    const masked = ipv4Prefix === 0 ? 0 : n - (n % 2 ** (32 - ipv4Prefix));
    return `${[24, 16, 8, 0].map((shift) => Math.floor(masked / 2 ** shift) % 256).join(".")}/${ipv4Prefix}`;
  }
  // A canonical address is a valid one: it always parses.
  const groups = parseIPv6(canonical)!;
  const masked = groups.map((g, i) => {
    const bits = Math.max(0, Math.min(16, ipv6Prefix - i * 16));
    return bits === 16 ? g : bits === 0 ? 0 : g & (0xffff << (16 - bits)) & 0xffff;
  });
  // Formatting through canonicalizeIp keeps one notation for a network and for an address (RFC 5952).
  return `${canonicalizeIp(masked.map((g) => g.toString(16)).join(":"))}/${ipv6Prefix}`;
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
