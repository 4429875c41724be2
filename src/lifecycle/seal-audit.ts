import type pg from "pg";
import { FatalError } from "../errors.ts";
import { query } from "../db/query.ts";
import { inTransaction } from "../sink/transaction.ts";
import type { KeyProvider } from "../vault/key-provider.ts";
import type { AuditKey } from "./audit-key.ts";
import { auditMac, clientReported, readAuditRow } from "./audit-row.ts";
import type { PiiKind } from "../ingest/pseudonymize.ts";
import { classifyPgError } from "../sink/pg-errors.ts";

/**
 * The first step of every audited reveal, in one transaction: `statement` appends the audit row (a masq.audit_*
 * definer function, which also records what it will hand out), the row is sealed with its MAC, COMMIT. Only then
 * may the caller reveal, and only what the committed row names (the definer functions of step 2 check it).
 */
export async function appendSealed<R extends { seq: string }>(pool: pg.Pool, key: AuditKey, statement: string, values: unknown[]): Promise<R> {
  return inTransaction(pool, async (client) => {
    const row = (await query<R>(client, statement, values)).rows[0]!;
    await sealAudit(client, key, row.seq);
    return row;
  });
}

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

/**
 * A reveal found stored values that are not their pseudonym's (planted): flags them, so that ingestion replaces them
 * when the true value arrives. The flag is an audited action of its own (migration 012): a sealed 'vault-suspect'
 * row naming the values and the committed reveal (`reveal`, and for a subject export the user id it was for) that
 * found them, in the flag's transaction. Returns that row's seq, or undefined when nothing was left to flag.
 */
export async function flagSuspect(
  pool: pg.Pool,
  key: AuditKey,
  reveal: string,
  userId: string | null,
  forged: readonly { kind: PiiKind; pseudonym: string }[],
): Promise<string | undefined> {
  if (forged.length === 0) return undefined;
  return inTransaction(pool, async (client) => {
    let seq: string | null;
    try {
      const r = await client.query<{ seq: string | null }>("SELECT masq.flag_vault_suspect($1, $2, $3, $4, $5)::text AS seq", [
        reveal,
        userId,
        forged.map((f) => f.kind),
        forged.map((f) => f.pseudonym),
        key.version,
      ]);
      seq = r.rows[0]!.seq;
    } catch (err) {
      // The reveal's row is older than the ten minutes a step 2 may use it (a long export): the values were withheld,
      // but only a new reveal of them can flag them.
      if ((err as { code?: string }).code === "42501") {
        throw new FatalError(`the planted value(s) ${forged.map((f) => `${f.kind} ${f.pseudonym}`).join(", ")} were withheld but not flagged`, {
          hint: `audit row ${reveal} is no longer a recent reveal of this login; run masq unmask --pseudonym on them to flag them`,
        });
      }
      throw classifyPgError(err);
    }
    if (seq === null) return undefined;
    await sealAudit(client, key, seq);
    return seq;
  });
}
