import { createHash } from "node:crypto";
import type pg from "pg";
import { classifyPgError } from "../db/query.ts";
import { qualified, quoteIdent } from "../db/tables.ts";
import { contractBatchLength, type ContractSealedBatch } from "./contract-batch.ts";
import type { ContractPlan } from "./contract-plan.ts";
import type { VaultEpochs } from "./batch.ts";
import { sentDays, StaleKeyError, StaleVaultError, type BatchResult } from "./write-batch.ts";

/** A contract batch's result: login's, and the rows written by event type (for metrics and the run's counters). */
export interface ContractBatchResult extends BatchResult {
  writtenByEvent: Record<string, number>;
}

/** The parameters before the tables' own: key version, vault epoch, quarantine (12), vault (5). */
const FIXED = 19;

/**
 * The batch statement of a contract, generated once at start: the guarantees of login's (write-batch.ts batchSql), for
 * every table the contract writes. One statement, so one transaction: masq.lock_pseudonym_key and, when the sealer left
 * values out, the vault epoch guard; the ledger claim (ON CONFLICT DO NOTHING) of every message; then, only for the
 * newly claimed, one INSERT per table (its contract's columns, from unnest of one array per column, each sent as its
 * field's type), the quarantine records (with the pseudonyms their copies show) and the vault rows those use, through
 * masq.add_vault_values.
 *
 * Parameters: $1 key version, $2 vault epoch, $3-$14 quarantine, $15-$19 vault, then per table: message ids, ledger
 * days, event names, and one array per column.
 */
export function contractBatchSql(plan: ContractPlan): string {
  let p = FIXED;
  const tableCtes: string[] = [];
  const ledger: string[] = [];
  const used: string[] = [];
  const inserts: string[] = [];
  const counts: string[] = [];
  plan.tables.forEach((t, i) => {
    const arrays = [`$${++p}::text[]`, `$${++p}::date[]`, `$${++p}::text[]`, ...t.columns.map((c) => `$${++p}::${c.sent}[]`)];
    const names = ["message_id", "sent_day", "event", ...t.columns.map((_, j) => `c${j}`)];
    tableCtes.push(`t${i} AS (\n  SELECT * FROM unnest(${arrays.join(", ")})\n    AS r(${names.join(", ")})\n)`);
    ledger.push(`SELECT message_id, 'written' AS outcome, sent_day FROM t${i}`);
    const claimedRows = `FROM t${i} r JOIN claimed c ON c.message_id = r.message_id AND c.outcome = 'written'`;
    t.columns.forEach((c, j) => {
      if (c.vaultKind !== undefined) used.push(`SELECT ${literal(c.vaultKind)}::text AS kind, r.c${j} AS p ${claimedRows}`);
    });
    inserts.push(
      `w${i} AS (\n  INSERT INTO ${qualified(t.table)} (${t.columns.map((c) => quoteIdent(c.name)).join(", ")})\n  SELECT ${t.columns.map((_, j) => `r.c${j}`).join(", ")}\n  ${claimedRows}\n  RETURNING 1\n)`,
    );
    counts.push(`SELECT r.event ${claimedRows}`);
  });
  used.push(
    "SELECT split_part(x, ':', 1) AS kind, split_part(x, ':', 2) AS p FROM bad b JOIN claimed c ON c.message_id = b.message_id AND c.outcome = 'quarantined', unnest(b.pseudonyms) AS x",
  );
  return `
WITH locks AS (
  SELECT masq.lock_pseudonym_key($1) AS key_ok, masq.lock_vault_epoch() AS epoch
), guard AS (
  SELECT key_ok AND ($2::bigint IS NULL OR epoch = $2::bigint) AS ok FROM locks
), ${tableCtes.join(", ")}, bad AS (
  SELECT q.*, string_to_array(q.pseudonyms_text, ' ') AS pseudonyms
  FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::timestamptz[], $9::timestamptz[],
              $10::uuid[], $11::bytea[], $12::bytea[], $13::text[], $14::text[])
    AS q(message_id, reason, detail, body, body_length, sent_at, received_at, body_data_key_id, body_nonce, body_ciphertext,
         user_id, pseudonyms_text)
), claimed AS (
  -- Partitioned by the day of SentTimestamp, as login's claim (write-batch.ts).
  INSERT INTO masq.ingest_ledger (message_id, outcome, sent_day)
  SELECT message_id, outcome, sent_day FROM (
    ${ledger.join("\n    UNION ALL\n    ")}
    UNION ALL
    SELECT message_id, 'quarantined', coalesce((sent_at AT TIME ZONE 'UTC')::date, '-infinity') FROM bad
  ) m
  WHERE (SELECT ok FROM guard)
    AND NOT EXISTS (SELECT 1 FROM masq.ingest_ledger u WHERE u.sent_day = '-infinity' AND u.message_id = m.message_id)
  ON CONFLICT (message_id, sent_day) DO NOTHING
  RETURNING message_id, outcome
), used AS (
  -- The values the newly claimed rows and records use: only these go into the vault.
  ${used.join("\n  UNION ALL ")}
), vaulted AS (
  SELECT masq.add_vault_values($1, array_agg(v.kind), array_agg(v.pseudonym), array_agg(v.data_key_id), array_agg(v.nonce), array_agg(v.ciphertext)) AS n,
         count(*) AS entries
  FROM unnest($15::text[], $16::text[], $17::uuid[], $18::bytea[], $19::bytea[]) AS v(kind, pseudonym, data_key_id, nonce, ciphertext)
  WHERE (v.kind, v.pseudonym) IN (SELECT kind, p FROM used)
  HAVING count(*) > 0
), ${inserts.join(", ")}, quarantined AS (
  INSERT INTO masq.quarantine (message_id, reason, detail, body, body_length, sent_at, received_at, body_data_key_id, body_nonce, body_ciphertext,
                               user_id, pseudonyms)
  SELECT b.message_id, b.reason, b.detail, b.body, b.body_length, b.sent_at, b.received_at, b.body_data_key_id, b.body_nonce, b.body_ciphertext,
         b.user_id, b.pseudonyms
  FROM bad b JOIN claimed c ON c.message_id = b.message_id AND c.outcome = 'quarantined'
  RETURNING reason
)
SELECT (SELECT key_ok FROM locks) AS key_ok, (SELECT epoch FROM locks)::float8 AS epoch, (SELECT ok FROM guard) AS ok,
       (SELECT coalesce(sum(entries), 0) FROM vaulted)::int AS vault_entries,
       (${plan.tables.map((_, i) => `(SELECT count(*) FROM w${i})`).join(" + ")})::int AS written,
       (SELECT coalesce(json_object_agg(event, n), '{}') FROM (SELECT event, count(*)::int AS n FROM (${counts.join(" UNION ALL ")}) e GROUP BY event) g) AS by_event,
       (SELECT coalesce(json_object_agg(reason, n), '{}') FROM (SELECT reason, count(*)::int AS n FROM quarantined GROUP BY reason) g) AS by_reason`;
}

/** A kind as a SQL literal; kinds are `^[a-z][a-z0-9_]*$` (read-contract.ts checks), so quoting is only a safeguard. */
function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/**
 * Commits a sealed contract batch in one statement (`sql`: contractBatchSql of the same plan). Message ids must be
 * distinct. Throws TransientError (StaleKeyError and StaleVaultError among them), DataError or FatalError, as
 * writeBatch does.
 */
export async function writeContractBatch(pool: pg.Pool, plan: ContractPlan, sql: string, batch: ContractSealedBatch): Promise<ContractBatchResult> {
  let name = statementNames.get(sql);
  // Named after its text: a connection prepares it once, and two contracts in one process (tests) never share a name.
  if (name === undefined) statementNames.set(sql, (name = `masq_contract_batch_${createHash("sha256").update(sql).digest("hex").slice(0, 24)}`));
  type Result = { key_ok: boolean; epoch: number; ok: boolean; vault_entries: number; written: number; by_event: Record<string, number>; by_reason: Record<string, number> };
  let res: pg.QueryResult<Result>;
  try {
    res = await pool.query<Result>({ text: sql, name, values: statementValues(plan, batch) });
  } catch (err) {
    throw classifyPgError(err);
  }
  const r = res.rows[0];
  if (r?.key_ok !== true) throw new StaleKeyError(batch.keyVersion);
  if (r.ok !== true) throw new StaleVaultError(batch.vaultEpoch!, r.epoch);
  const quarantined = Object.values(r.by_reason).reduce((a, b) => a + b, 0);
  const vaultEpochs: VaultEpochs = { min: r.epoch, max: r.epoch, ...(r.vault_entries < batch.vault.length ? { partial: true } : {}) };
  return {
    written: r.written,
    quarantined,
    quarantinedByReason: r.by_reason,
    duplicates: contractBatchLength(batch) - r.written - quarantined,
    vaultEpochs,
    writtenByEvent: r.by_event,
  };
}

const statementNames = new Map<string, string>();

function statementValues(plan: ContractPlan, batch: ContractSealedBatch): unknown[] {
  const q = batch.quarantine;
  const v = batch.vault;
  const values: unknown[] = [
    batch.keyVersion,
    batch.vaultEpoch,
    q.map((o) => o.messageId),
    q.map((o) => o.reason),
    q.map((o) => o.detail),
    q.map((o) => o.redactedBody),
    q.map((o) => o.bodyLength),
    q.map((o) => o.sentAt?.toISOString() ?? null),
    q.map((o) => o.receivedAt.toISOString()),
    q.map((o) => o.sealedBody?.dataKeyId ?? null),
    q.map((o) => o.sealedBody?.nonce ?? null),
    q.map((o) => o.sealedBody?.ciphertext ?? null),
    q.map((o) => o.facts.userId),
    // "kind:pseudonym" holds no space (kinds are [a-z0-9_], pseudonyms hex): one text per record, split in SQL.
    // Never NULL: an empty array ('' splits to {}) still marks the record as a contract's, so that a pseudonym key
    // rotation never redacts its copy again by the login's allowlist (reredact-quarantine.ts).
    q.map((o) => (o.facts.pseudonyms == null ? "" : o.facts.pseudonyms.join(" "))),
    v.map((e) => e.kind),
    v.map((e) => e.pseudonym),
    v.map((e) => e.dataKeyId),
    v.map((e) => e.nonce),
    v.map((e) => e.ciphertext),
  ];
  plan.tables.forEach((t, i) => {
    const rows = batch.rows.filter((r) => r.table === i);
    values.push(
      rows.map((r) => r.messageId),
      sentDays(rows.map((r) => (r.sentAt === null ? null : r.sentAt.getTime()))),
      rows.map((r) => r.event),
    );
    t.columns.forEach((_, j) => values.push(rows.map((r) => r.values[j] ?? null)));
  });
  return values;
}
