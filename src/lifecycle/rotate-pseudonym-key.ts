import type pg from "pg";
import type { AuditKey } from "./audit-key.ts";
import { ConfigError } from "../errors.ts";
import { qualified, type TableName } from "../sink/table-name.ts";
import { sql } from "kysely";
import { classified } from "../db/query.ts";
import type { Db } from "../sink/db.ts";
import { masqQueries } from "../db/schema.ts";
import { DataKeys, type DataKeyLimits } from "../vault/data-keys.ts";
import type { KeyProvider } from "../vault/key-provider.ts";
import { pseudonymKeyVersion } from "../vault/pseudonym-keys.ts";
import { openAuditKey } from "./audit-key.ts";
import { recordRotation } from "./seal-audit.ts";
import { inTransaction } from "../sink/transaction.ts";
import { OpenedDataKeys } from "./opened-data-keys.ts";
import type { PassContext } from "./pass-context.ts";
import { repseudonymizeVault } from "./repseudonymize-vault.ts";
import { reredactQuarantine } from "./reredact-quarantine.ts";
import { retirePseudonymKey } from "./retire-pseudonym-key.ts";
import { assertRewritable } from "./rewrite-table.ts";
import { assertTablesRewritable, rotationTables, rewriteTables, tableText } from "./rewrite-tables.ts";
import { withRotationLock } from "./rotation-state.ts";
import { readRotationState, setRotationPhase, type RotationPhase, type RotationState } from "./rotation-state.ts";
import { switchPseudonymKey } from "./switch-pseudonym-key.ts";
import type { Blocker } from "../sink/lock-watch.ts";

export interface RotatePseudonymKeyOptions {
  pool: pg.Pool;
  provider: KeyProvider;
  /**
   * The table the table pass rewrites first (--table or MASQ_TABLE). The rotation rewrites every registered table as
   * well, whatever is named: a resumed rotation goes on with the tables it recorded and ignores this.
   */
  table: TableName;
  batchSize: number;
  /** Continue the rotation in progress; without it, one in progress is refused (and with it, none is started). */
  resume: boolean;
  limits?: DataKeyLimits | undefined;
  /** Stops the rotation between two batches; run it again with resume to continue. */
  signal?: AbortSignal | undefined;
  /** The switch has committed (or was found done): from now on ingestion writes under the new key. */
  onSwitched?: ((state: RotationState, switched: boolean) => void) | undefined;
  /** The switch or a pass ended a session of a masq role that held it up (SECURITY.md, "Waits"). */
  onBlockerEnded?: ((b: Blocker, what: string) => void) | undefined;
  onPhase?: ((phase: RotationPhase) => void) | undefined;
  /** The table pass starts (or resumes) on this table (schema.name). */
  onTable?: ((table: string) => void) | undefined;
  onBatch?: ((phase: RotationPhase, done: number, total: number) => void) | undefined;
}

export type RotatePseudonymKeyResult =
  | { outcome: "nothing to resume" }
  | { outcome: "stopped"; state: RotationState }
  | { outcome: "finished"; state: RotationState };

/**
 * `masq rotate pseudonym-key`: a new pseudonym key, and every pseudonym masq wrote under the old one replaced, while
 * ingestion keeps running. In order, each step resumable:
 *   1. the switch (switch-pseudonym-key.ts): from its commit on, ingestion writes under the new key only;
 *   2. the vault pass: each stored value under its new pseudonym, old → new recorded in the rotation map;
 *   3. the quarantine pass: kept bodies redacted under the new key;
 *   4. the table pass: the table named and every registered table, one after another, through the map;
 *   5. retirement of the old key, once every table is done: its key material destroyed, the map emptied.
 * A value's pseudonym changes, but which rows share a value does not: the map is one-to-one.
 */
export async function rotatePseudonymKey(opts: RotatePseudonymKeyOptions): Promise<RotatePseudonymKeyResult> {
  const { pool, provider } = opts;
  return withRotationLock(pool, async () => {
    const inProgress = await readRotationState(pool);
    if (inProgress !== undefined && !opts.resume) {
      throw new ConfigError(
        "--resume",
        `a rotation from pseudonym key version ${inProgress.fromVersion} to ${inProgress.toVersion} is in progress (${inProgress.phase} pass); ` +
          "continue it with masq rotate pseudonym-key --resume",
      );
    }
    if (inProgress === undefined && opts.resume) return { outcome: "nothing to resume" };
    // A resumed rotation goes on with the tables it recorded, whatever --table names now.
    if (inProgress === undefined) await assertRewritable(pool, opts.table);
    await assertTablesRewritable(pool, inProgress ?? { targetTable: tableText(opts.table), tablesDone: [] });
    // The audit key first: one that does not unwrap stops the rotation here, before anything is switched or rewritten.
    const auditKey = await openAuditKey(pool, provider, opts.signal);
    try {
      return await rotateAudited(opts, auditKey);
    } finally {
      auditKey.key.fill(0);
    }
  });
}

/** The rotation proper: each step that changes keys commits with its sealed audit row, or is preceded by one. */
async function rotateAudited(opts: RotatePseudonymKeyOptions, auditKey: AuditKey): Promise<RotatePseudonymKeyResult> {
  const { pool, provider } = opts;
  const record = (client: pg.PoolClient, selector: Record<string, unknown>) => recordRotation(client, auditKey, provider, "rotate-pseudonym-key", selector);
  // The trail names the tables: those the switch sets out to rewrite, those a resume has left, those the end did.
  const tablesLeft = async (s: Pick<RotationState, "targetTable" | "tablesDone">) =>
    (await rotationTables(pool, s.targetTable)).map((t) => t.text).filter((t) => !s.tablesDone.includes(t));
  const named = tableText(opts.table);
  const planned = await tablesLeft({ targetTable: named, tablesDone: [] });
  const { state, switched } = await switchPseudonymKey(
    pool,
    provider,
    named,
    (client, fromVersion, toVersion) => record(client, { event: "switched", fromVersion, toVersion, tables: planned }),
    opts.signal,
    opts.onBlockerEnded,
  );
  opts.onSwitched?.(state, switched);
  // A resumed rotation records that it goes on before its passes change anything.
  if (!switched) {
    const tables = await tablesLeft(state);
    await inTransaction(pool, (client) => record(client, { event: "resumed", fromVersion: state.fromVersion, toVersion: state.toVersion, tables, phase: state.phase }));
  }

  const next = await pseudonymKeyVersion(pool, provider, state.toVersion, opts.signal);
  const previous = await pseudonymKeyVersion(pool, provider, state.fromVersion, opts.signal);
  const opened = new OpenedDataKeys(pool, provider);
  const dataKeys = new DataKeys({ pool, provider, ...(opts.limits ? { limits: opts.limits } : {}) });
  const ctx = (phase: RotationPhase): PassContext => ({
    pool,
    state,
    pseudonymizer: next.pseudonymizer,
    previous: previous.pseudonymizer,
    opened,
    dataKeys,
    batchSize: opts.batchSize,
    signal: opts.signal,
    onBatch: (done, total) => opts.onBatch?.(phase, done, total),
    onBlockerEnded: opts.onBlockerEnded,
  });
  try {
    if (state.phase === "vault") {
      opts.onPhase?.("vault");
      if (!(await repseudonymizeVault(ctx("vault")))) return { outcome: "stopped", state: (await readRotationState(pool))! };
      await setRotationPhase(pool, state.fromVersion, (state.phase = "quarantine"));
    }
    if (state.phase === "quarantine") {
      opts.onPhase?.("quarantine");
      if (!(await reredactQuarantine(ctx("quarantine")))) return { outcome: "stopped", state: (await readRotationState(pool))! };
      await setRotationPhase(pool, state.fromVersion, (state.phase = "table"));
    }
    opts.onPhase?.("table");
    if (!(await rewriteTables(ctx("table"), opts.onTable))) return { outcome: "stopped", state: (await readRotationState(pool))! };
    const final = await retirePseudonymKey(pool, state.fromVersion, (client, f) =>
      record(client, {
        event: "finished",
        fromVersion: f.fromVersion,
        toVersion: f.toVersion,
        tables: f.tablesDone,
        vaultValues: f.vaultDone,
        bodies: f.quarantineDone,
        rows: f.tableRowsDone,
        forged: f.forged,
      }),
    );
    return { outcome: "finished", state: final };
  } finally {
    dataKeys.close();
    opened.close();
  }
}

/** What `masq rotate pseudonym-key --dry-run` reports: the key in use, a rotation in progress, and what a rotation would rewrite. */
export interface RotationPreview {
  version: number | null;
  provider: string | null;
  retiring: number | null;
  values: number;
  bodies: number;
  /** The tables a rotation rewrites, with their size in blocks (the table pass's unit). */
  tables: { text: string; blocks: number }[];
}

export async function previewPseudonymRotation(db: Db, table: TableName): Promise<RotationPreview> {
  const k = masqQueries(db);
  const active = k.selectFrom("masq.pseudonym_keys").where("state", "=", "active");
  const r = await classified(
    k
      .selectNoFrom((eb) => [
        active.select("version").as("version"),
        active.select("provider").as("provider"),
        eb.selectFrom("masq.pseudonym_keys").where("state", "=", "retiring").select("version").as("retiring"),
        sql<number>`(SELECT count(*) FROM masq.vault WHERE key_version = (${active.select("version")}))::int`.as("values"),
        sql<number>`(SELECT count(*) FROM masq.quarantine WHERE body IS NOT NULL)::int`.as("bodies"),
      ])
      .executeTakeFirstOrThrow(),
  );
  const tables: RotationPreview["tables"] = [];
  if (r.retiring === null && r.version !== null && r.provider !== "external") {
    for (const t of await rotationTables(db.pool, tableText(table))) {
      const b = await classified(sql<{ blocks: string | null }>`SELECT pg_relation_size(to_regclass(${qualified(t.table)})) / current_setting('block_size')::int AS blocks`.execute(k));
      tables.push({ text: t.text, blocks: Number(b.rows[0]?.blocks ?? 0) });
    }
  }
  return { ...r, tables };
}
