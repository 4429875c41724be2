import type pg from "pg";
import { FatalError } from "../errors.ts";
import { classifyPgError, connect, query } from "../db/query.ts";

export type RotationPhase = "vault" | "quarantine" | "table";

/** A pseudonym key rotation in progress: one row of masq.pseudonym_rotation (104_lifecycle.sql). */
export interface RotationState {
  fromVersion: number;
  toVersion: number;
  switchedAt: Date;
  /** The table the table pass is on (schema.name): the table* cursor fields are this table's. */
  targetTable: string;
  /** The tables the table pass has finished, in order. */
  tablesDone: string[];
  phase: RotationPhase;
  vaultDone: number;
  quarantineAfter: string | null;
  quarantineDone: number;
  tableBlocks: number | null;
  tableBlockDone: number;
  tableRelfilenode: number | null;
  tableRowsDone: number;
  unmapped: number;
  /** Vault values the vault pass found not to be their pseudonym's (planted, or altered): dropped. */
  forged: number;
}

interface StateRow {
  from_version: number;
  to_version: number;
  switched_at: Date;
  target_table: string;
  tables_done: string[];
  phase: RotationPhase;
  vault_done: string;
  quarantine_after: string | null;
  quarantine_done: string;
  table_blocks: string | null;
  table_block_done: string;
  table_relfilenode: number | null;
  table_rows_done: string;
  unmapped: string;
  forged: string;
}

export async function readRotationState(db: pg.Pool | pg.PoolClient): Promise<RotationState | undefined> {
  let rows: StateRow[];
  try {
    rows = (await db.query<StateRow>("SELECT * FROM masq.pseudonym_rotation")).rows;
  } catch (err) {
    if ((err as { code?: string }).code === "42P01") {
      throw new FatalError("masq.pseudonym_rotation does not exist: masq's schema is not in place; run masq migrate first");
    }
    throw classifyPgError(err);
  }
  if (rows.length > 1) throw new FatalError("masq.pseudonym_rotation holds more than one rotation; only one can be in progress");
  return rows[0] === undefined ? undefined : fromRow(rows[0]);
}

/** Moves to the next phase; the table pass starts from block 0 of the table as it is now. */
export async function setRotationPhase(pool: pg.Pool, fromVersion: number, phase: RotationPhase): Promise<void> {
  await query(pool, "UPDATE masq.pseudonym_rotation SET phase = $2 WHERE from_version = $1", [fromVersion, phase]);
}

function fromRow(r: StateRow): RotationState {
  const num = (v: string | null) => (v === null ? null : Number(v));
  return {
    fromVersion: r.from_version,
    toVersion: r.to_version,
    switchedAt: r.switched_at,
    targetTable: r.target_table,
    tablesDone: r.tables_done,
    phase: r.phase,
    vaultDone: Number(r.vault_done),
    quarantineAfter: r.quarantine_after,
    quarantineDone: Number(r.quarantine_done),
    tableBlocks: num(r.table_blocks),
    tableBlockDone: Number(r.table_block_done),
    tableRelfilenode: r.table_relfilenode,
    tableRowsDone: Number(r.table_rows_done),
    unmapped: Number(r.unmapped),
    forged: Number(r.forged),
  };
}

/**
 * Runs `fn` while this session holds masq's rotation lock: one rotation (of either kind) at a time. A session-level
 * advisory lock, so a rotation killed mid-way frees it with its connection, and the next run resumes.
 */
export async function withRotationLock<T>(pool: pg.Pool, fn: () => Promise<T>): Promise<T> {
  const client = await connect(pool);
  let locked: boolean;
  try {
    locked = (await query<{ ok: boolean }>(client, "SELECT pg_try_advisory_lock(hashtext('masq.rotate')) AS ok")).rows[0]?.ok === true;
  } catch (err) {
    client.release();
    throw err;
  }
  if (!locked) {
    client.release();
    throw new FatalError("another `masq rotate` is running against this database; wait for it (or stop it) and run again");
  }
  try {
    return await fn();
  } finally {
    // A connection that cannot unlock is destroyed, which frees the lock as well.
    const unlocked = await client.query("SELECT pg_advisory_unlock(hashtext('masq.rotate'))").then(
      () => true,
      () => false,
    );
    client.release(!unlocked);
  }
}
