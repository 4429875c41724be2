import { readFileSync } from "node:fs";
import { readContractFile, readPseudonymKey, readTable, settingSources, type Sources } from "../settings/config.ts";
import { loadContractTarget } from "../contracts/contract-tables.ts";
import { contractKinds, pseudonymInput, type KindFields } from "../contracts/pseudonym-value.ts";
import { revealing } from "../log.ts";
import { ConfigError } from "../errors.ts";
import { KIND_PATTERN } from "../ingest/pseudonymize.ts";
import { canonicalizeIp } from "../ingest/login-event.ts";
import { readReason, REVEAL_REFUSAL, runAudited } from "../lifecycle/audited-command.ts";
import { KINDS, pseudonymOf, tablesOfKind, unmask, type Selector, formatUnmasked, readFormat } from "../lifecycle/unmask.ts";

/**
 * `masq unmask --reason "…"`: recovers original values from the vault, by pseudonym or by rows of the target table
 * (lifecycle/unmask.ts). Exit 1 when a value is withheld because it is not its pseudonym's.
 */
export async function unmaskCommand(flags: Record<string, unknown>): Promise<number> {
  const src = settingSources(flags, process.env);
  const reason = readReason(flags);
  const selector = readSelector(flags);
  const format = readFormat(flags);
  const table = readTable(src);
  return runAudited(flags, { keys: "now", refuse: REVEAL_REFUSAL }, async (lc) => {
    const r = await unmask(lc, { reason, selector, table, pseudonymKeyOverride: readPseudonymKey(src) });
    if (r.notFound.length > 0) process.stderr.write(`masq: not in the vault (${r.notFound.length}): ${r.notFound.join(", ")}\n`);
    if (r.more) process.stderr.write(`masq: more values match; showing the first ${selector.limit} (raise --limit for more)\n`);
    revealing("unmask", r.auditSeq);
    process.stdout.write(formatUnmasked(r.values, format));
    for (const f of r.forged) {
      process.stderr.write(
        `masq: the vault value of ${f.kind} ${f.pseudonym} is not that pseudonym's value (planted with ingestion's credentials?): ` +
          "not shown; marked suspect, so ingestion replaces it when the true value arrives\n",
      );
    }
    return r.forged.length > 0 ? 1 : 0;
  });
}

/**
 * `masq pseudonym <kind> <value> --reason "…"`: the pseudonym of a value an analyst holds, to find its rows. The
 * value is canonicalised as ingestion does: without a contract (or with the login's), the login's two kinds (an IP
 * address in RFC 5952 form); with one (MASQ_CONTRACT, --contract), any kind its pseudonymize or hash fields declare,
 * as those fields' types canonicalise it (contracts/pseudonym-value.ts), and only a kind a registered table holds.
 * The value is never printed or logged; the audit record names the pseudonym, and is written before it is shown.
 */
export async function pseudonymCommand(kind: string, valueArg: string, flags: Record<string, unknown>): Promise<number> {
  const src = settingSources(flags, process.env);
  const reason = readReason(flags);
  const contract = readContractKinds(src);
  const fields = contract?.kinds.get(kind);
  // The kind is not echoed either: the arguments swapped put the value in its place.
  if (contract === undefined && !KINDS.includes(kind)) throw new ConfigError("<kind>", "must be ip or device_id (the kind comes first: masq pseudonym <kind> <value>)", { what: "unknown kind" });
  if (contract !== undefined && fields === undefined) {
    const kinds = [...contract.kinds.keys()];
    throw new ConfigError("<kind>", kinds.length === 0 ? `must be a kind of the contract, and ${contract.file} declares none (no pseudonymize or hash field)` : `must be one of the kinds of ${contract.file}: ${kinds.join(", ")} (the kind comes first: masq pseudonym <kind> <value>)`, {
      what: "unknown kind",
    });
  }
  const raw = valueArg === "-" ? readFileSync(0, "utf8").replace(/\r?\n$/, "") : valueArg;
  let value = raw;
  if (fields !== undefined) {
    const input = pseudonymInput(fields, raw);
    if ("problem" in input) throw new ConfigError("<value>", input.problem);
    value = input.value;
  } else if (kind === "ip") {
    const canonical = canonicalizeIp(raw.trim());
    if (canonical === null) throw new ConfigError("<value>", "is not a valid IP address");
    value = canonical;
  }
  if (value === "") throw new ConfigError("<value>", "is empty");
  return runAudited(flags, { keys: "now", refuse: REVEAL_REFUSAL }, async (lc) => {
    // A kind no registered table holds has no rows to find here: the contract is not this database's (or masq migrate
    // --contract has not run), and a pseudonym that matches nothing would only leave an audit record behind.
    if (contract !== undefined && (await tablesOfKind(lc.db, kind)).length === 0) {
      throw new ConfigError("<kind>", `kind ${kind} of ${contract.file} is in no table registered in this database, so no row holds its pseudonyms`, {
        what: "kind not registered",
        hint: "run masq migrate --contract with this contract as the schema owner, or check DATABASE_URL",
      });
    }
    const pseudonym = await pseudonymOf(lc, { kind, value, reason, pseudonymKeyOverride: readPseudonymKey(src) });
    process.stdout.write(`${pseudonym}\n`);
    return 0;
  });
}

/** The kinds of the contract MASQ_CONTRACT or --contract names; undefined without one, or for the login contract (or a copy). */
function readContractKinds(src: Sources): { file: string; kinds: Map<string, KindFields> } | undefined {
  const file = readContractFile(src);
  const target = loadContractTarget(file, src.flags.contract === undefined ? "MASQ_CONTRACT" : "--contract");
  return target === undefined ? undefined : { file: file!, kinds: contractKinds(target.contract) };
}

function readSelector(flags: Record<string, unknown>): Selector {
  const list = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : typeof v === "string" ? [v] : []);
  const pseudonyms = list(flags.pseudonym).map((p) => p.trim().toLowerCase().replace(/^hmac:/, ""));
  // What was typed is never echoed: a value pasted by mistake (an ip, a device id) is PII.
  pseudonyms.forEach((p, i) => {
    if (!/^[0-9a-f]{64}$/.test(p)) {
      throw new ConfigError("--pseudonym", `must be 64 hex digits, as in the pseudonym columns (masked_ip, masked_device_id, a contract's pseudonymize columns); pseudonym ${i + 1} of ${pseudonyms.length} is ${p.length} characters long and not one`, {
        what: "not a pseudonym",
        hint: "to find the pseudonym of a value you hold, use masq pseudonym <kind> -",
      });
    }
  });
  const userIds = list(flags.userId);
  const date = (name: string, v: unknown): string | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(v) || Number.isNaN(Date.parse(`${v}T00:00:00Z`))) throw new ConfigError(name, "must be a date, YYYY-MM-DD");
    return v;
  };
  const from = date("--from", flags.from);
  const to = date("--to", flags.to);
  if (pseudonyms.length === 0 && userIds.length === 0 && from === undefined && to === undefined) {
    throw new ConfigError("--pseudonym/--user-id/--from/--to", "say what to unmask: pseudonyms, or rows of the table by user id and/or date range");
  }
  const kind = typeof flags.kind === "string" ? flags.kind : undefined;
  // Any kind a contract may declare (a kind the vault does not hold finds nothing); without --kind, the login's two.
  if (kind !== undefined && !KIND_PATTERN.test(kind)) throw new ConfigError("--kind", "must be ip or device_id, or a kind a contract declares (a lowercase letter, then up to 62 lowercase letters, digits or _)", { what: "unknown kind" });
  const limit = typeof flags.limit === "number" ? flags.limit : 1000;
  return { pseudonyms, userIds, from, to, kinds: kind === undefined ? [...KINDS] : [kind], everyKind: kind === undefined, limit };
}
