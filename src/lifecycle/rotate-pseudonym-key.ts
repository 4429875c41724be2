import type pg from "pg";
import { sql } from "kysely";
import { type Blocker, withLockWatch } from "../db/lock-watch.ts";
import { type Db, inTransaction } from "../db/pool.ts";
import { classified } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";
import { qualified, type TableName } from "../db/tables.ts";
import { ConfigError, FatalError } from "../errors.ts";
import { type AuditKey, openAuditKey } from "../keys/audit-key.ts";
import { DataKeys, type DataKeyLimits } from "../keys/data-keys.ts";
import { OpenedDataKeys } from "../keys/unwrap-data-keys.ts";
import type { KeyProvider } from "../keys/key-provider.ts";
import { pseudonymKeyVersion, pseudonymKeyContext, pseudonymKeyFingerprint } from "../keys/pseudonym-keys.ts";
import { recordRotation } from "./audit.ts";
import type { PassContext } from "./audited-command.ts";
import { repseudonymizeVault } from "./repseudonymize-vault.ts";
import { reredactQuarantine } from "./reredact-quarantine.ts";
import { assertRewritable, assertTablesRewritable, rotationTables, rewriteTables, tableText } from "./rewrite-tables.ts";
import { withRotationLock, readRotationState, setRotationPhase, type RotationPhase, type RotationState } from "./rotation-state.ts";

/**
 * `masq rotate pseudonym-key`: the whole rotation (switch, the three passes, retirement) under the rotation lock,
 * each step audited, and its dry-run preview.
 */

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
 *   1. the switch (switchPseudonymKey below): from its commit on, ingestion writes under the new key only;
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

// The switch: the step that makes ingestion write under the new key.

interface KeyRow {
  version: number;
  state: "active" | "retiring";
  provider: string;
  fingerprint: string;
}

/**
 * The switch: the active pseudonym key becomes 'retiring' and a new version becomes active, in one transaction.
 * Ingestion's batch statement holds a share lock on the active key's row until it commits
 * (masq.lock_pseudonym_key), so the FOR UPDATE here waits for the batches in flight, and every batch after the
 * commit finds its key retired, writes nothing and is masked again under the new key. From the commit on, no
 * pseudonym under the old key is written. A rotation already switched (a 'retiring' key exists) is resumed instead.
 * The rotation's audit row (`audit`) is appended in the switch's transaction once the key is held: no switch commits
 * without it.
 */
export async function switchPseudonymKey(
  pool: pg.Pool,
  provider: KeyProvider,
  targetTable: string,
  audit: (client: pg.PoolClient, fromVersion: number, toVersion: number) => Promise<unknown>,
  signal?: AbortSignal,
  onBlockerEnded?: (b: Blocker, what: string) => void,
): Promise<{ state: RotationState; switched: boolean }> {
  const existing = await readRotationState(pool);
  if (existing !== undefined) return { state: existing, switched: false };
  const db = masqQueries(pool);
  const keys = await classified(
    db.selectFrom("masq.pseudonym_keys").select(["version", "state", "provider", "fingerprint"]).where("state", "in", ["active", "retiring"]).$castTo<KeyRow>().execute(),
  );
  if (keys.some((k) => k.state === "retiring")) {
    throw new FatalError("a pseudonym key is 'retiring' but masq.pseudonym_rotation has no rotation for it; the rotation's state was lost, so it cannot be resumed safely");
  }
  const active = keys.find((k) => k.state === "active");
  if (active === undefined) throw new FatalError("there is no pseudonym key yet (the first masq run creates it): nothing to rotate");
  refuseExternal(active);

  const { next } = await classified(
    db
      .selectFrom("masq.pseudonym_keys")
      .select(sql<number>`max(version) + 1`.as("next"))
      .executeTakeFirstOrThrow(),
  );
  // The provider call happens before the transaction: while it holds the key row, ingestion's batches wait.
  const g = await provider.generateKey(pseudonymKeyContext(next), signal);
  const fingerprint = pseudonymKeyFingerprint(g.plaintext);
  g.plaintext.fill(0);

  await inTransaction(pool, async (client) => {
    const tx = masqQueries(client);
    // Whatever a session of a masq role holds is ended after about 1 s (withLockWatch); only a session masq may not
    // end (the owner's, a superuser's) can hold the key this long, and then the error names it. The table lock is
    // queued fairly: a share lock on a key row (ROW SHARE on the table) asked for after it waits behind it, so new
    // ingest sessions cannot keep the switch off one after another, and its one wait of 30 s at most is the
    // switch's deadline (the FOR UPDATE after it finds no other holder).
    await classified(sql`SET LOCAL lock_timeout = '30s'`.execute(tx));
    const locked = await withLockWatch(pool, client, { what: "the active pseudonym key", onEnded: onBlockerEnded }, async () => {
      await classified(sql`LOCK TABLE masq.pseudonym_keys IN EXCLUSIVE MODE`.execute(tx));
      return classified(tx.selectFrom("masq.pseudonym_keys").select(["version", "state", "provider", "fingerprint"]).where("state", "=", "active").forUpdate().execute());
    });
    // Appended once the key is held, so that the trail's chain lock (which every audited action waits for) is held
    // for the switch's few statements, not for its wait.
    await audit(client, active.version, next);
    const now = locked[0];
    if (now?.version !== active.version) throw new FatalError("the active pseudonym key changed while the rotation started; run it again");
    // Every batch under the old key holds its share lock from before this moment; every batch under the new key
    // starts after the commit. The quarantine pass tells old records from new ones by it.
    const at = await classified(
      tx
        .selectFrom("masq.pseudonym_keys")
        .select([sql<Date>`clock_timestamp()`.as("switched_at"), sql<number>`max(version) + 1`.as("next")])
        .executeTakeFirstOrThrow(),
    );
    if (at.next !== next) throw new FatalError("another pseudonym key was added while the rotation started; run it again");
    await classified(tx.updateTable("masq.pseudonym_keys").set({ state: "retiring" }).where("version", "=", active.version).execute());
    // Written as SQL: the Database type does not know which columns have defaults (created_at, the counters).
    await classified(
      sql`INSERT INTO masq.pseudonym_keys (version, state, provider, master_key_id, wrapped, fingerprint)
        VALUES (${next}, 'active', ${provider.name}, ${g.masterKeyId}, ${Buffer.from(g.wrapped)}, ${fingerprint})`.execute(tx),
    );
    await classified(
      sql`INSERT INTO masq.pseudonym_rotation (from_version, to_version, switched_at, target_table, phase)
        VALUES (${active.version}, ${next}, ${at.switched_at}, ${targetTable}, 'vault')`.execute(tx),
    );
  });
  return { state: (await readRotationState(pool))!, switched: true };
}

function refuseExternal(active: KeyRow): void {
  if (active.provider !== "external") return;
  throw new ConfigError(
    "MASQ_PSEUDONYM_KEY",
    `the active pseudonym key (version ${active.version}, fingerprint ${active.fingerprint}) is one given from outside in MASQ_PSEUDONYM_KEY, ` +
      "of which masq keeps only the fingerprint. masq can rotate only a pseudonym key it manages: every process writing with the given key " +
      "would be refused after the switch. Rotate that key where it is kept, or re-ingest with a key masq manages (unset MASQ_PSEUDONYM_KEY on a new database)",
  );
}

// Retirement: the step that ends a rotation.

/**
 * The end of a rotation: once no vault row has the old version and the table pass has done every registered table
 * (rewriteTables: until then the map is their rows' only way to the vault), the old key is retired and its key
 * material destroyed (wrapped set to NULL), and the rotation map, the last link between old and new pseudonyms, is
 * emptied.
 * One transaction, with the rotation's audit row (`audit`, appended before the key is retired). Returns the
 * rotation's final counts.
 */
export async function retirePseudonymKey(
  pool: pg.Pool,
  fromVersion: number,
  audit: (client: pg.PoolClient, final: RotationState) => Promise<unknown>,
): Promise<RotationState> {
  const final = await inTransaction(pool, async (client) => {
    const state = await readRotationState(client);
    if (state?.fromVersion !== fromVersion) throw new FatalError(`no rotation of pseudonym key version ${fromVersion} is in progress`);
    const tx = masqQueries(client);
    const left = await classified(tx.selectFrom("masq.vault").select(sql`1`.as("one")).where("key_version", "=", fromVersion).limit(1).execute());
    if (left.length > 0) throw new FatalError(`the vault still holds values under pseudonym key version ${fromVersion}; run the rotation again with --resume`);
    const undone = await classified(
      sql<{ t: string }>`SELECT r.schema_name || '.' || r.table_name AS t FROM masq.registered_tables() r
        WHERE NOT (r.schema_name || '.' || r.table_name = ANY (${state.tablesDone}::text[]))`.execute(tx),
    );
    if (undone.rows.length > 0) {
      throw new FatalError(`the rotation has not rewritten ${undone.rows.map((r) => r.t).join(", ")} yet; run the rotation again with --resume`);
    }
    await audit(client, state);
    await classified(
      tx
        .updateTable("masq.pseudonym_keys")
        .set({ state: "retired", retired_at: sql`now()`, wrapped: null })
        .where("version", "=", fromVersion)
        .where("state", "=", "retiring")
        .execute(),
    );
    await classified(tx.deleteFrom("masq.pseudonym_rotation").where("from_version", "=", fromVersion).execute());
    // TRUNCATE, not DELETE: the map's pages go at once instead of lingering as dead rows until a vacuum.
    await classified(sql`TRUNCATE masq.pseudonym_rotation_map`.execute(tx));
    return state;
  });
  // The retired key's wrapped form lingers in the old row version until a vacuum; this table is tiny.
  await sql`VACUUM masq.pseudonym_keys`.execute(masqQueries(pool)).catch(() => undefined);
  return final;
}
