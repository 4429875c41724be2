import type pg from "pg";
import { query } from "../db/query.ts";
import type { AuditKey } from "./audit-key.ts";
import { AUDIT_COLUMNS, macMatches, type AuditRow } from "./audit-row.ts";

/** The head of the trail at some moment, kept outside the database: `masq-audit:<seq>:<mac hex>`. */
export interface Checkpoint {
  seq: bigint;
  mac: string;
}

export function formatCheckpoint(c: Checkpoint): string {
  return `masq-audit:${c.seq}:${c.mac}`;
}

export function parseCheckpoint(text: string): Checkpoint | undefined {
  const m = /^masq-audit:(\d{1,18}):([0-9a-f]{64})$/.exec(text.trim());
  return m ? { seq: BigInt(m[1]!), mac: m[2]! } : undefined;
}

export type VerifyResult =
  | { ok: true; checked: number; legacy: number; head: Checkpoint | undefined }
  | { ok: false; seq: bigint; problem: string };

/** Rows read per query while verifying: memory stays bounded whatever the trail's length. */
const PAGE = 5000;

/** The only actions of rows from before the chain (masq.unmask_audit, copied by migration 005). */
export const LEGACY_ACTIONS = new Set(["unmask", "pseudonym"]);

/**
 * Walks the whole trail in seq order and recomputes every MAC. The chain begins at the audit key's chain_start
 * (migration 012): the row there is sealed, with no row before it in the chain (prev_mac NULL); every row after it is
 * sealed and names the MAC of the row before; rows before it (copied from masq.unmask_audit by migration 005) carry
 * no MAC. So it finds the first row that was changed (its MAC does not match its content), removed (a gap in seq, a
 * row whose prev_mac is not the MAC of the row before, or a trail that ends before its chain begins), reordered, or
 * inserted or blanked by something other than masq (no valid MAC where the chain requires one), and a chain start
 * that was moved (the row it names is not the chain's first). With a checkpoint, the row it names must still be
 * there, unchanged: that proves nothing was cut from the end since it was taken, which the chain alone cannot show.
 */
export async function verifyAudit(pool: pg.Pool, key: AuditKey, against?: Checkpoint): Promise<VerifyResult> {
  let prev: AuditRow | undefined;
  let checked = 0;
  let legacy = 0;
  let after = 0n;
  let sawCheckpoint = against === undefined;
  const start = key.chainStart;
  for (;;) {
    // audit.seq, the column: a bare "seq" in ORDER BY would be AUDIT_COLUMNS' text copy, which sorts 10 before 2.
    const rows = (await query<AuditRow>(pool, `SELECT ${AUDIT_COLUMNS} FROM masq.audit WHERE audit.seq > $1 ORDER BY audit.seq LIMIT $2`, [after.toString(), PAGE])).rows;
    if (rows.length === 0) break;
    for (const r of rows) {
      const seq = BigInt(r.seq);
      const expected = prev === undefined ? 1n : BigInt(prev.seq) + 1n;
      if (seq !== expected) return { ok: false, seq: expected, problem: `row ${expected}${seq > expected + 1n ? ` to ${seq - 1n}` : ""} removed (the trail jumps to row ${seq})` };
      const problem = seq < start ? legacyProblem(r, seq, start) : chainProblem(key, r, seq, start, prev);
      if (problem !== undefined) return { ok: false, seq, problem };
      if (seq < start) legacy++;
      else checked++;
      if (against !== undefined && seq === against.seq) {
        if (r.mac?.toString("hex") !== against.mac) return { ok: false, seq, problem: `row ${seq} is not the one the checkpoint names (the trail was rewritten from there)` };
        sawCheckpoint = true;
      }
      prev = r;
    }
    after = BigInt(rows.at(-1)!.seq);
  }
  const last = prev === undefined ? 0n : BigInt(prev.seq);
  if (last < start) {
    return { ok: false, seq: start, problem: `the chain begins at row ${start} (masq.audit_keys.chain_start), but the trail ends at row ${last}: rows ${last + 1n} to ${start} or more were removed` };
  }
  if (!sawCheckpoint) {
    return { ok: false, seq: against!.seq, problem: `row ${against!.seq}, the checkpoint's head, is gone: rows ${last + 1n} to ${against!.seq} were cut from the end` };
  }
  const head = prev?.mac ? { seq: BigInt(prev.seq), mac: prev.mac.toString("hex") } : undefined;
  return { ok: true, checked, legacy, head };
}

/** A row before the chain: only what migration 005 copied (no MAC, an unmask or pseudonym lookup). */
function legacyProblem(r: AuditRow, seq: bigint, start: bigint): string | undefined {
  if (r.key_version !== null || r.mac !== null || r.prev_mac !== null) {
    return `row ${seq} is sealed but lies before row ${start}, where masq.audit_keys says the chain begins (the chain start was moved)`;
  }
  if (!LEGACY_ACTIONS.has(r.action)) return `row ${seq} (${r.action}) has no MAC, but only unmask and pseudonym rows predate the chain (inserted or altered outside masq)`;
  return undefined;
}

/** A row of the chain: sealed under this key, its MAC right, following the row before (none, at the chain's start). */
function chainProblem(key: AuditKey, r: AuditRow, seq: bigint, start: bigint, prev: AuditRow | undefined): string | undefined {
  if (r.key_version === null || r.mac === null) {
    return `row ${seq} has no MAC, but the chain began at row ${start} (its MAC, key version or link was removed, or it was inserted outside masq)`;
  }
  if (r.key_version !== key.version) return `row ${seq} names audit key version ${r.key_version}, which is not this database's`;
  if (!macMatches(key.key, r)) return `row ${seq} was changed (its MAC does not match its content)`;
  if (seq === start) {
    if (r.prev_mac !== null) return `row ${seq}, where masq.audit_keys says the chain begins, follows another row (the chain start was moved)`;
    return undefined;
  }
  const prevMac = prev?.mac ?? null;
  if (prevMac === null || r.prev_mac === null || !r.prev_mac.equals(prevMac)) {
    return `the row before row ${seq} was changed, removed or reordered (row ${seq} does not follow it)`;
  }
  return undefined;
}
