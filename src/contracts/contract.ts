/**
 * A privacy contract: which events masq accepts and, for every field of each, its type and the one thing that
 * happens to it. Read from YAML by read-contract.ts, compiled once into plain functions by compile-contract.ts.
 * Loaded from the file a setting names, or the login contract shipped with masq.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ConfigError } from "../errors.ts";
import { readContract, formatContractError } from "./read-contract.ts";

export const FIELD_TYPES = ["string", "integer", "boolean", "timestamp", "ip", "semver", "object"] as const;
export type FieldType = (typeof FIELD_TYPES)[number];

export const TREATMENTS = ["pseudonymize", "hash", "generalize", "keep", "drop"] as const;
export type TreatmentName = (typeof TREATMENTS)[number];

/** The treatments each type allows: a boolean or a version says nothing worth a pseudonym, a subtree is only dropped. */
export const TREATMENTS_OF: Readonly<Record<FieldType, readonly TreatmentName[]>> = {
  string: ["pseudonymize", "hash", "keep", "drop"],
  integer: ["pseudonymize", "hash", "generalize", "keep", "drop"],
  boolean: ["keep", "drop"],
  timestamp: ["generalize", "keep", "drop"],
  ip: ["pseudonymize", "hash", "generalize", "keep", "drop"],
  semver: ["keep", "drop"],
  object: ["drop"],
};

export type Treatment =
  /** Keyed HMAC in the column, the original in the vault under `kind`. */
  | { name: "pseudonymize"; kind: string }
  /** Keyed HMAC in the column, nothing in the vault: never recoverable. */
  | { name: "hash"; kind: string }
  | { name: "generalize"; ipv4Prefix: number; ipv6Prefix: number }
  | { name: "generalize"; to: "hour" | "day" }
  | { name: "generalize"; bucket: number }
  | { name: "keep" }
  | { name: "drop" };

/**
 * Fields of the message rather than of the event: `$sent_at` is SQS's SentTimestamp, `$sns.MessageId` and
 * `$sns.Timestamp` are an SNS notification's (present only when the event type unwraps SNS envelopes).
 */
export const MESSAGE_FIELDS: Readonly<Record<string, { type: FieldType; sns: boolean }>> = {
  $sent_at: { type: "timestamp", sns: false },
  "$sns.MessageId": { type: "string", sns: true },
  "$sns.Timestamp": { type: "timestamp", sns: true },
};

export interface FieldSpec {
  /** Dotted path in the event ("card.last4"), or a message field ("$sent_at"). */
  path: string;
  type: FieldType;
  /** Absent or null is refused (missing_field); an optional field absent, null or "" is stored as null. */
  required: boolean;
  /** Strings and IPs: the longest value accepted, in characters (code points, as Postgres counts them). */
  maxLength: number | undefined;
  treatment: Treatment;
  /** The target table's column; undefined only for a dropped field. */
  column: string | undefined;
}

export interface EventSpec {
  name: string;
  /** Every event (`all`) or the events whose discriminator field holds this value. */
  match: { all: true } | { field: string; equals: string };
  envelope: "none" | "sns";
  table: string;
  /** The path of the field that says whom the event is about (subject export and erase find rows by it). */
  subject: string;
  /** A field the contract does not name: refuse the event (`quarantine`, fail-closed) or ignore the field. */
  unknown: "quarantine" | "drop";
  fields: FieldSpec[];
}

export interface Contract {
  version: 1;
  events: EventSpec[];
}

/** The login contract shipped with masq: today's behaviour, written as a contract (contracts/login.yaml). */
export const DEFAULT_CONTRACT_FILE = new URL("../../contracts/login.yaml", import.meta.url);

export function defaultContract(): Contract {
  const read = readContract(readFileSync(DEFAULT_CONTRACT_FILE, "utf8"));
  // A shipped file that does not read is a defect of masq, not of the user's configuration (a test reads it).
  if (read.contract === undefined) throw new Error(`contracts/login.yaml: ${read.errors.map((e) => `${e.line}:${e.col}: ${e.message}`).join("; ")}`);
  return read.contract;
}

/** A contract file as the commands read it: its name as shown, and the contract or every error as "file:line:col: …". */
export type LoadedContract = { file: string; contract: Contract; errors: [] } | { file: string; contract: undefined; errors: string[] };

/**
 * Reads the contract file `path` (MASQ_CONTRACT or --contract), or the login contract shipped with masq when it is
 * undefined. A file that cannot be read is a ConfigError naming the setting.
 */
export function loadContract(path: string | undefined, setting = "MASQ_CONTRACT"): LoadedContract {
  const file = path ?? fileURLToPath(DEFAULT_CONTRACT_FILE);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(setting, `cannot read ${file} (${code}); give a contract file (YAML)`);
  }
  const read = readContract(text);
  if (read.contract === undefined) return { file, contract: undefined, errors: read.errors.map((e) => formatContractError(file, e)) };
  return { file, contract: read.contract, errors: [] };
}

/** One line about a contract that reads: its event types and how many fields each classifies. */
export function describeContract(contract: Contract): string {
  return contract.events.map((e) => `${e.name} → ${e.table} (${e.fields.length} fields, unknown fields: ${e.unknown})`).join("; ");
}
