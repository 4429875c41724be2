import type pg from "pg";
import type { KeyProvider } from "../vault/key-provider.ts";
import type { AuditKey } from "./audit-key.ts";
import { clientReported } from "./client-reported.ts";
import { appendAudit } from "./seal-audit.ts";

export type RotationAction = "rotate-pseudonym-key" | "rotate-master-key";

/**
 * A rotation's entry in the audit trail (run by the schema owner, who may append directly): that it ran, who ran
 * it, and what it changes. Appended and sealed in the caller's transaction, so that the change it records commits
 * with it or not at all; the key was opened before anything was changed, so a rotation never runs unaudited.
 */
export async function recordRotation(
  client: pg.PoolClient,
  key: AuditKey,
  provider: KeyProvider,
  action: RotationAction,
  selector: Record<string, unknown>,
): Promise<string> {
  return appendAudit(client, key, { action, reason: action.replace("-", " "), selector, client: await clientReported(provider) });
}
