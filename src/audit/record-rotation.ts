import type pg from "pg";
import { inTransaction } from "../sink/transaction.ts";
import type { KeyProvider } from "../vault/key-provider.ts";
import { openAuditKey } from "./audit-key.ts";
import { clientReported } from "./client-reported.ts";
import { appendAudit } from "./seal-audit.ts";

/**
 * A rotation's entry in the audit trail (run by the schema owner, who may append directly): that it ran, who ran
 * it, and what it changed. A rotation decrypts every vault value, so it is an auditable action like an unmask.
 */
export async function recordRotation(
  pool: pg.Pool,
  provider: KeyProvider,
  action: "rotate-pseudonym-key" | "rotate-master-key",
  selector: Record<string, unknown>,
): Promise<void> {
  const key = await openAuditKey(pool, provider);
  try {
    const client = await clientReported(provider);
    await inTransaction(pool, (c) => appendAudit(c, key, { action, reason: action.replace("-", " "), selector, client }));
  } finally {
    key.key.fill(0);
  }
}
