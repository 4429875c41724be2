import type pg from "pg";
import { FatalError } from "../errors.ts";
import { classifyPgError } from "../sink/pg-errors.ts";
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
  try {
    await client.query("SELECT masq.audit_seal($1, $2)", [seq, auditMac(key.key, row)]);
  } catch (err) {
    throw classifyPgError(err);
  }
}

/** Owner only (rotations): appends a row of `action` and seals it, in the caller's transaction. */
export async function appendAudit(
  client: pg.PoolClient,
  key: AuditKey,
  a: { action: "rotate-pseudonym-key" | "rotate-master-key"; reason: string; selector: Record<string, unknown>; client: Record<string, unknown> },
): Promise<string> {
  let seq: string;
  try {
    const r = await client.query<{ seq: string }>("SELECT masq.audit_append($1, $2, $3, $4, '{}', $5)::text AS seq", [
      a.action,
      a.reason,
      JSON.stringify(a.selector),
      JSON.stringify(a.client),
      key.version,
    ]);
    seq = r.rows[0]!.seq;
  } catch (err) {
    throw classifyPgError(err);
  }
  await sealAudit(client, key, seq);
  return seq;
}
