/**
 * A contract's route of `masq quarantine replay` (replay-route.ts): a contract's record (pseudonyms NOT NULL) is
 * prepared from its decrypted original, or a corrected body, exactly as `masq run` prepares a message by the contract
 * (prepareContractOutcome: the same checks, pseudonyms, generalisations and drops; the vault sealer's sealContract),
 * and its row goes into its event type's table.
 */
import { sql, type RawBuilder } from "kysely";
import type pg from "pg";
import { classified } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";
import type { ContractOutcome, ContractRow } from "../ingest/contract-batch.ts";
import type { ContractPlan } from "../ingest/contract-plan.ts";
import { contractKeysOf, prepareContractOutcome } from "../ingest/prepare-contract.ts";
import { replayClaim, replaySplitting, writtenOrStale, type ReplayResult, type ReplayRoute, type ReplayVault } from "./replay-route.ts";

/**
 * Every record from a body: a contract's record keeps its original (encrypted) or nothing to replay from. A
 * db_rejected one keeps the masked row its table refused (commit-contract-batch.ts), which names neither the event
 * type nor the values before masking: it replays only from a corrected body.
 */
const fromBody: ReplayRoute["fromBody"] = (r, corrected) => corrected || r.has_original;

export function contractRoute(plan: ContractPlan): ReplayRoute {
  return {
    contract: true,
    fromBody,
    async prepare(records, bodies, keys, opts) {
      const rows: ContractRow[] = [];
      const stillRejected = new Map<string, number>();
      let cannot = 0;
      let rowsOnly = 0;
      let vault: ReplayVault | undefined;
      if (keys !== undefined) {
        const contractKeys = contractKeysOf(keys.pseudonym.pseudonymizer);
        const outcomes: ContractOutcome[] = [];
        for (const r of records) {
          const body = bodies.get(r.message_id);
          if (body === undefined) continue;
          const o = prepareContractOutcome({ messageId: r.message_id, body, sentAt: r.sent_at, receivedAt: r.received_at }, plan, contractKeys);
          if (o.kind === "row") outcomes.push(o);
          else stillRejected.set(o.reason, (stillRejected.get(o.reason) ?? 0) + 1);
        }
        if (opts.seal) {
          const sealed = await keys.sealer.sealContract(outcomes, keys.pseudonym.version);
          rows.push(...sealed.rows);
          vault = { keyVersion: keys.pseudonym.version, entries: sealed.vault };
        } else {
          for (const o of outcomes) if (o.kind === "row") rows.push(o);
        }
      }
      for (const r of records) {
        if (fromBody(r, opts.corrected)) continue;
        if (r.reason === "db_rejected") rowsOnly++;
        else cannot++;
      }
      return { loads: rows.length, stillRejected, cannot, rowsOnly, write: (pool) => replayContractRows(pool, plan, rows, vault) };
    },
  };
}

/** Loads a contract's replayed rows, in one statement per batch (replayClaim): each row into its event type's table. */
export async function replayContractRows(pool: pg.Pool, plan: ContractPlan, rows: readonly ContractRow[], vault: ReplayVault | undefined): Promise<ReplayResult> {
  return replaySplitting(rows, (part) => replayContractStatement(pool, plan, part, vault));
}

async function replayContractStatement(pool: pg.Pool, plan: ContractPlan, rows: readonly ContractRow[], vault: ReplayVault | undefined): Promise<number> {
  const keyVersion = vault?.keyVersion ?? null;
  const entries = vault?.entries ?? [];
  const ctes: RawBuilder<unknown>[] = [];
  const written: RawBuilder<unknown>[] = [];
  // The pseudonyms of the rows this statement inserted, by kind: only their vault values are added.
  const used: RawBuilder<unknown>[] = [];
  plan.tables.forEach((t, i) => {
    const mine = rows.filter((r) => r.table === i);
    if (mine.length === 0) return;
    const input = sql.raw(`t${i}`);
    const inserted = sql.raw(`w${i}`);
    const names = t.columns.map((_, j) => sql.raw(`c${j}`));
    // One array per column, each sent as its field's type (contract-plan.ts sentTypeOf), as ingestion's statement sends it.
    const arrays = t.columns.map((c, j) => sql`${mine.map((r) => r.values[j] ?? null)}::${sql.raw(c.sent)}[]`);
    const recoverable = t.columns.flatMap((c, j) => (c.vaultKind === undefined ? [] : [{ kind: c.vaultKind, j }]));
    const returning = recoverable.length === 0 ? sql`1 AS one` : sql.join(recoverable.map(({ j }) => sql`${sql.id(t.columns[j]!.name)}::text AS ${sql.raw(`v${j}`)}`));
    ctes.push(
      sql`${input} AS (
         SELECT * FROM unnest(${mine.map((r) => r.messageId)}::text[], ${sql.join(arrays)}) AS r(message_id, ${sql.join(names)})
       ), ${inserted} AS (
         INSERT INTO ${sql.id(t.table.schema, t.table.name)} (${sql.join(t.columns.map((c) => sql.id(c.name)))})
         SELECT ${sql.join(names.map((n) => sql`r.${n}`))} FROM ${input} r JOIN marked m ON m.message_id = r.message_id
         RETURNING ${returning}
       )`,
    );
    written.push(sql`(SELECT count(*) FROM ${inserted})`);
    for (const { kind, j } of recoverable) used.push(sql`SELECT ${kind}::text AS kind, ${sql.raw(`v${j}`)} AS p FROM ${inserted}`);
  });
  const vaulted =
    used.length === 0
      ? sql`SELECT 0 AS n WHERE false`
      : sql`SELECT masq.add_vault_values(${keyVersion}::int, array_agg(v.kind), array_agg(v.pseudonym), array_agg(v.data_key_id), array_agg(v.nonce), array_agg(v.ciphertext)) AS n
         FROM unnest(${entries.map((e) => e.kind)}::text[], ${entries.map((e) => e.pseudonym)}::text[], ${entries.map((e) => e.dataKeyId)}::uuid[], ${entries.map((e) => e.nonce)}::bytea[], ${entries.map((e) => e.ciphertext)}::bytea[])
           AS v(kind, pseudonym, data_key_id, nonce, ciphertext)
         WHERE (v.kind, v.pseudonym) IN (${sql.join(used, sql` UNION ALL `)})
         HAVING count(*) > 0`;
  const res = await classified(
    sql<{ n: number; key_ok: boolean }>`WITH ${replayClaim(
      rows.map((r) => r.messageId),
      keyVersion,
      true,
    )}, ${sql.join(ctes)}, vaulted AS (
         ${vaulted}
       )
       SELECT (${sql.join(written, sql` + `)})::int AS n, (SELECT ok FROM guard) AS key_ok, (SELECT count(*) FROM vaulted) AS vault_calls`.execute(masqQueries(pool)),
  );
  return writtenOrStale(res.rows[0], keyVersion);
}
