/**
 * A privacy contract: which events masq accepts and, for every field of each, its type and the one thing that
 * happens to it. Read from YAML by read-contract.ts, compiled once into plain functions by compile-contract.ts.
 */

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
