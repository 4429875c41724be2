import { applyContract } from "../contracts/apply-contract.ts";
import type { ContractKeys } from "../contracts/compile-contract.ts";
import type { IncomingMessage } from "./batch.ts";
import type { ContractOutcome } from "./contract-batch.ts";
import type { ContractPlan } from "./contract-plan.ts";
import { contractQuarantineCopy } from "./contract-quarantine-body.ts";
import type { Pseudonymizer } from "./pseudonymize.ts";
import { NO_FACTS } from "./quarantine-body.ts";

/** The contract's keyed HMAC by kind, with the pseudonymizer of the key active now (the same HMAC as login's). */
export function contractKeysOf(p: Pseudonymizer): ContractKeys {
  // The kind is only the HMAC input's prefix: any kind a contract declares works as "ip" and "device_id" do.
  return { pseudonymize: (kind, value) => p.pseudonymize(kind, value) };
}

/**
 * Validate, transform and mask one message by its contract: pure CPU work, no I/O. What the result writes holds no
 * plain PII: a row of its event type's table (pseudonyms, generalised and kept values), or a quarantine record whose
 * copy shows only what the contract keeps (contract-quarantine-body.ts). The originals (`vault`, `originalBody`) stay
 * in memory until the vault sealer encrypts them.
 */
export function prepareContractOutcome(m: IncomingMessage, plan: ContractPlan, keys: ContractKeys): ContractOutcome {
  const meta = { messageId: m.messageId, sentAt: m.sentAt, receivedAt: m.receivedAt, bodyLength: m.body.length };
  try {
    // $sent_at falls back to the receive time, as login's create_date does (the runner warns once).
    const applied = applyContract(plan.compiled, { body: m.body, sentAt: m.sentAt ?? m.receivedAt }, keys);
    if (applied.ok) {
      const table = plan.events.get(applied.event)!.table;
      const values = plan.tables[table]!.columns.map((c) => applied.row[c.name] ?? null);
      return { ...meta, kind: "row", table, event: applied.event, values, ...(applied.vault.length > 0 ? { vault: applied.vault } : {}) };
    }
    const copy = contractQuarantineCopy(m.body, plan, keys);
    // The path names a field (or a key by its length), never a value.
    const detail = applied.path === "" ? "the body" : `field ${applied.path}`;
    return { ...meta, kind: "quarantine", reason: applied.reason, detail, redactedBody: copy.redactedBody, originalBody: m.body, facts: copy.facts };
  } catch (err) {
    // Invariant: no body stops the pipeline. Whatever slipped past the contract is quarantined without a copy; its
    // original is sealed with the record.
    return { ...meta, kind: "quarantine", reason: "unprocessable", detail: `masq could not process this body (${(err as Error).name})`, redactedBody: null, originalBody: m.body, facts: { ...NO_FACTS, pseudonyms: null } };
  }
}
