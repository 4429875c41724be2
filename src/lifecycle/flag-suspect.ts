import type pg from "pg";
import { FatalError } from "../errors.ts";
import type { PiiKind } from "../mask/pseudonymize.ts";
import { classifyPgError } from "../sink/pg-errors.ts";
import { inTransaction } from "../sink/transaction.ts";
import type { AuditKey } from "./audit-key.ts";
import { sealAudit } from "./seal-audit.ts";

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
