import type pg from "pg";
import { FatalError } from "../errors.ts";
import { query } from "../db/query.ts";
import type { AuditKey } from "./audit-key.ts";
import { auditMac, readAuditRow } from "./audit-row.ts";

/**
 * Seals the audit row `seq` that this transaction appended: reads it back as the server wrote it (who, when, what),
 * computes its MAC and stores it. Must run in the appending transaction, before its COMMIT (a deferred check
 * refuses to commit an unsealed row); the chain lock taken by the append is held until then.
 */
export async function sealAudit(client: pg.PoolClient, key: AuditKey, seq: string | number): Promise<void> {
  const row = await readAuditRow(client, seq);
  if (row === undefined) throw new FatalError(`audit row ${seq} is not there to seal`);
  await query(client, "SELECT masq.audit_seal($1, $2)", [seq, auditMac(key.key, row)]);
}

/** Owner only (rotations): appends a row of `action` and seals it, in the caller's transaction. */
export async function appendAudit(
  client: pg.PoolClient,
  key: AuditKey,
  a: { action: "rotate-pseudonym-key" | "rotate-master-key"; reason: string; selector: Record<string, unknown>; client: Record<string, unknown> },
): Promise<string> {
  const r = await query<{ seq: string }>(client, "SELECT masq.audit_append($1, $2, $3, $4, '{}', $5)::text AS seq", [
    a.action,
    a.reason,
    JSON.stringify(a.selector),
    JSON.stringify(a.client),
    key.version,
  ]);
  const seq = r.rows[0]!.seq;
  await sealAudit(client, key, seq);
  return seq;
}
