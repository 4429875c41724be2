import { createHmac } from "node:crypto";
import type { AuditKey } from "./audit-key.ts";

/**
 * How the lifecycle commands (subject export and erase) name a user in the audit trail: a keyed fingerprint, never
 * the id, so that the record of an erasure does not itself keep what was erased. Keyed with the audit key, which only
 * a holder of the master key can unwrap: someone who can read the trail cannot test guesses of user ids against it,
 * while an auditor with masq's keys can answer "was this user erased, and when?" (`masq audit list --user-id`).
 * The version prefix names the audit key, so a fingerprint stays checkable if that key is ever replaced.
 */
export function subjectFingerprint(key: Pick<AuditKey, "version" | "key">, userId: string): string {
  const mac = createHmac("sha256", key.key).update("masq subject\0").update(userId, "utf8").digest("hex");
  return `v${key.version}:${mac.slice(0, 32)}`;
}
