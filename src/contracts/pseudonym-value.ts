/**
 * What `masq pseudonym <kind> <value>` hashes when a contract is given: the value as the contract's own path would
 * have pseudonymised it at ingestion (an `ip` canonicalised, an `integer` as its decimal, a `string` exactly as
 * given). It is found by running that path, applyContract, on a one-field event of each type the kind's fields
 * have, with keys that hand back the HMAC's input instead of the HMAC: the two cannot drift apart. Pure.
 */
import { applyContract } from "./apply-contract.ts";
import { compileContract, type ContractKeys, type ContractReason } from "./compile-contract.ts";
import type { Contract, FieldSpec, FieldType } from "./contract.ts";

/** The fields of one kind in a contract (a kind is pseudonymized or hashed, never both: read-contract.ts). */
export interface KindFields {
  kind: string;
  treatment: "pseudonymize" | "hash";
  fields: FieldSpec[];
}

/** Every kind a `pseudonymize` or `hash` field of the contract declares, in the contract's order. */
export function contractKinds(contract: Contract): Map<string, KindFields> {
  const kinds = new Map<string, KindFields>();
  for (const e of contract.events) {
    for (const f of e.fields) {
      const t = f.treatment;
      if (t.name !== "pseudonymize" && t.name !== "hash") continue;
      const k = kinds.get(t.kind) ?? { kind: t.kind, treatment: t.name, fields: [] };
      k.fields.push(f);
      kinds.set(t.kind, k);
    }
  }
  return kinds;
}

/** The HMAC's input for a value an analyst holds, or what keeps every field of the kind from storing it (never the value). */
export type PseudonymInput = { value: string } | { problem: string };

/**
 * The input of the kind's HMAC for `raw`, as ingestion computes it. A value is tried as each field of the kind would
 * read it (an integer field reads it as the JSON number it would be sent as, every other field as JSON text); the
 * fields that refuse it could not hold it. When the fields that accept it store it alike (one type, or "42" under a
 * string and an integer field), that is the input; when they store it differently (an IPv6 address written in
 * capitals, under a string and an ip field) the rows hold two pseudonyms, and the value is refused rather than one
 * of them printed.
 */
export function pseudonymInput(k: KindFields, raw: string): PseudonymInput {
  const accepted = new Map<string, FieldType>();
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const f of k.fields) {
    const shape = `${f.type}/${f.maxLength ?? ""}`;
    if (seen.has(shape)) continue;
    seen.add(shape);
    const r = asField(f, raw);
    if ("value" in r) accepted.set(r.value, f.type);
    else problems.push(problemOf(r.reason, f));
  }
  if (accepted.size === 1) return { value: [...accepted.keys()][0]! };
  if (accepted.size > 1) {
    const types = [...new Set(accepted.values())].join(" and ");
    return {
      problem: `is stored differently by the ${types} fields of kind ${k.kind} (${accepted.size} pseudonyms): write it as the field you search stores it (an IP address in canonical form, an integer in plain decimal)`,
    };
  }
  const unique = [...new Set(problems)];
  return { problem: unique.length === 1 ? unique[0]! : `fits no field of kind ${k.kind}: it ${unique.join("; it ")}` };
}

/** The HMAC input `raw` becomes in field `f` (required, so that a blank value is refused as ingestion refuses it). */
function asField(f: FieldSpec, raw: string): { value: string } | { reason: ContractReason } {
  const field: FieldSpec = { ...f, path: "value", required: true, column: "value" };
  const compiled = compileContract({
    version: 1,
    events: [{ name: "pseudonym", match: { all: true }, envelope: "none", table: "pseudonym", subject: "value", unknown: "drop", fields: [field] }],
  });
  let input: string | undefined;
  const capture: ContractKeys = {
    pseudonymize: (_kind, value) => {
      input = value;
      return value;
    },
  };
  const applied = applyContract(compiled, { body: JSON.stringify({ value: f.type === "integer" ? asJsonNumber(raw) : raw }), sentAt: new Date(0) }, capture);
  if (!applied.ok) return { reason: applied.reason };
  return { value: input! };
}

/** An integer field holds a JSON number: the text as the number a producer would send ("1e3" is 1000), else as text (refused). */
function asJsonNumber(raw: string): unknown {
  try {
    const v: unknown = JSON.parse(raw);
    return typeof v === "number" ? v : raw;
  } catch {
    return raw;
  }
}

function problemOf(reason: ContractReason, f: FieldSpec): string {
  switch (reason) {
    case "wrong_type":
      return "is not an integer (a number without a fraction, at most 2^53)";
    case "invalid_ip":
      return "is not a valid IP address";
    case "empty_field":
    case "missing_field":
      return "is empty";
    case "too_long":
      return `is longer than the ${f.maxLength} characters a ${f.type} field of this kind accepts`;
    case "invalid_text":
      return "holds a NUL or an unpaired surrogate, which no field stores";
    default:
      return `is refused as ${reason}`;
  }
}
