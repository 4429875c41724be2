import type pg from "pg";
import { classifyPgError } from "../sink/pg-errors.ts";
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

/**
 * Walks the whole trail in seq order and recomputes every MAC. It finds the first row that was changed (its MAC
 * does not match its content), removed (a gap in seq, or a row whose prev_mac is not the MAC of the row before),
 * reordered (the same), or inserted by something other than masq (no valid MAC). Rows from before migration 005
 * carry no MAC and may only come first. With a checkpoint, the row it names must still be there, unchanged: that
 * proves nothing was cut from the end since it was taken, which the chain alone cannot show.
 */
export async function verifyAudit(pool: pg.Pool, key: AuditKey, against?: Checkpoint): Promise<VerifyResult> {
  let prev: AuditRow | undefined;
  let checked = 0;
  let legacy = 0;
  let after = 0n;
  let sawCheckpoint = against === undefined;
  for (;;) {
    let rows: AuditRow[];
    try {
      // audit.seq, the column: a bare "seq" in ORDER BY would be AUDIT_COLUMNS' text copy, which sorts 10 before 2.
      rows = (await pool.query<AuditRow>(`SELECT ${AUDIT_COLUMNS} FROM masq.audit WHERE audit.seq > $1 ORDER BY audit.seq LIMIT $2`, [after.toString(), PAGE])).rows;
    } catch (err) {
      throw classifyPgError(err);
    }
    if (rows.length === 0) break;
    for (const r of rows) {
      const seq = BigInt(r.seq);
      const expected = prev === undefined ? 1n : BigInt(prev.seq) + 1n;
      if (seq !== expected) return { ok: false, seq: expected, problem: `row ${expected}${seq > expected + 1n ? ` to ${seq - 1n}` : ""} removed (the trail jumps to row ${seq})` };
      if (r.key_version === null) {
        if (prev !== undefined && prev.key_version !== null) return { ok: false, seq, problem: `row ${seq} has no MAC after the chain began (inserted or altered outside masq)` };
        legacy++;
      } else {
        if (r.key_version !== key.version) return { ok: false, seq, problem: `row ${seq} names audit key version ${r.key_version}, which is not this database's` };
        if (!macMatches(key.key, r)) return { ok: false, seq, problem: `row ${seq} was changed (its MAC does not match its content)` };
        const prevMac = prev?.mac ?? null;
        const linked = prevMac === null ? r.prev_mac === null : r.prev_mac !== null && r.prev_mac.equals(prevMac);
        if (!linked) return { ok: false, seq, problem: `the row before row ${seq} was changed, removed or reordered (row ${seq} does not follow it)` };
        checked++;
      }
      if (against !== undefined && seq === against.seq) {
        if (r.mac?.toString("hex") !== against.mac) return { ok: false, seq, problem: `row ${seq} is not the one the checkpoint names (the trail was rewritten from there)` };
        sawCheckpoint = true;
      }
      prev = r;
    }
    after = BigInt(rows.at(-1)!.seq);
  }
  if (!sawCheckpoint) {
    const last = prev === undefined ? 0n : BigInt(prev.seq);
    return { ok: false, seq: against!.seq, problem: `row ${against!.seq}, the checkpoint's head, is gone: rows ${last + 1n} to ${against!.seq} were cut from the end` };
  }
  const head = prev?.mac ? { seq: BigInt(prev.seq), mac: prev.mac.toString("hex") } : undefined;
  return { ok: true, checked, legacy, head };
}
