import type pg from "pg";
import { createHmac, timingSafeEqual } from "node:crypto";
import { userInfo } from "node:os";
import { sql, type RawBuilder } from "kysely";
import { inTransaction } from "../db/pool.ts";
import { classified, classifyPgError } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";
import { describeError, FatalError } from "../errors.ts";
import type { Kind } from "../ingest/pseudonymize.ts";
import type { AuditKey } from "../keys/audit-key.ts";
import type { KeyProvider } from "../keys/key-provider.ts";

/**
 * masq's audit trail (masq.audit): the row as its MAC covers it, appending and sealing a row in the transaction that
 * records an action (appendSealed, sealAudit, recordRotation, flagSuspect), what a row counts (audit list), and the
 * walk that verifies the whole chain (audit verify).
 */

/**
 * A row of masq.audit as the MAC covers it. Every field is read in a canonical text form (the timestamp in UTC to
 * the microsecond, jsonb as Postgres prints it, which sorts keys), so the MAC computed when the row is sealed and
 * the one `masq audit verify` recomputes are over the same bytes.
 */
export interface AuditRow {
  seq: string;
  at: string;
  action: string;
  login_role: string;
  effective_role: string;
  client_reported: string;
  reason: string;
  selector: string;
  subjects: string[];
  value_count: number;
  key_version: number | null;
  prev_mac: Buffer | null;
  mac: Buffer | null;
}

export const AUDIT_COLUMNS = `seq::text AS seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at, action,
  login_role, effective_role, client_reported::text AS client_reported, reason, selector::text AS selector, subjects,
  value_count, key_version, prev_mac, mac`;

/** HMAC-SHA256(audit key, "masq/audit/v1" || the row's fields in order, as JSON), MAC field excluded. */
export function auditMac(key: Uint8Array, r: AuditRow): Buffer {
  const fields = [r.seq, r.at, r.action, r.login_role, r.effective_role, r.client_reported, r.reason, r.selector, r.subjects, r.value_count, r.key_version, r.prev_mac?.toString("hex") ?? null];
  return createHmac("sha256", key).update("masq/audit/v1\n").update(JSON.stringify(fields)).digest();
}

export function macMatches(key: Uint8Array, r: AuditRow): boolean {
  return r.mac !== null && r.mac.length === 32 && timingSafeEqual(auditMac(key, r), r.mac);
}

export async function readAuditRow(db: pg.Pool | pg.PoolClient, seq: string | number): Promise<AuditRow | undefined> {
  return (await classified(sql<AuditRow>`SELECT ${sql.raw(AUDIT_COLUMNS)} FROM masq.audit WHERE seq = ${seq}`.execute(masqQueries(db)))).rows[0];
}

/**
 * What the client says about itself, recorded apart from what the server knows (session_user): the operating-system
 * user, and with KMS the AWS caller that STS names. Both come from the client's machine and could be made up by a
 * client that is not masq, which is why the audit labels them client-reported.
 */
export async function clientReported(provider: KeyProvider): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const os = osUser();
  if (os !== undefined) out.os_user = os;
  try {
    const aws = await provider.callerIdentity();
    if (aws !== undefined) out.aws_identity = aws;
  } catch (err) {
    out.aws_identity = `unknown (${describeError(err).slice(0, 200)})`;
  }
  return out;
}

function osUser(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER;
  }
}

// What a row counts, in words (masq audit list).

/**
 * What an audit row covers, counted in the units of its action. The row's value_count column is the number of its
 * subjects (cardinality, 103_audit.sql), which is the number of values only for unmask and pseudonym: an export
 * names one subject, its user, and records what it showed in its selector (rows, values, quarantined messages).
 */
export function auditCounts(r: Pick<AuditRow, "action" | "selector" | "subjects" | "value_count">): Record<string, number> {
  const s = JSON.parse(r.selector) as Record<string, unknown>;
  const num = (k: string) => Number(s[k] ?? 0);
  switch (r.action) {
    case "unmask":
    case "pseudonym":
      return { values: r.subjects.length };
    case "subject-export":
      return { rows: num("rows"), values: num("values"), quarantined: num("quarantined") };
    case "subject-erase":
      return s.phase === "start" ? { users: r.subjects.length } : { rows: num("rows"), quarantine: num("quarantine"), originals: num("originals"), vault: num("vault") };
    case "vault-prune":
      return s.pass === "quarantine" ? { quarantine: r.subjects.length } : { vault: r.subjects.length };
    case "quarantine-original":
    case "replay":
      return { originals: r.subjects.length };
    case "rotate-master-key":
    case "rotate-pseudonym-key":
      return {};
    default:
      return { subjects: r.value_count };
  }
}

const UNITS: Record<string, string> = {
  values: "value(s)",
  rows: "row(s)",
  quarantined: "quarantined message(s)",
  users: "user(s)",
  quarantine: "quarantine record(s)",
  originals: "original(s)",
  vault: "vault value(s)",
  subjects: "subject(s)",
};

/** "144 row(s), 34 value(s), 0 quarantined message(s)"; "keys only" for a rotation. */
export function auditCountsText(counts: Record<string, number>): string {
  const parts = Object.entries(counts).map(([k, n]) => `${n.toLocaleString("en-US")} ${UNITS[k] ?? k}`);
  return parts.length === 0 ? "keys only" : parts.join(", ");
}

// Appending and sealing: every audited action's row commits sealed before anything is revealed or changed.

/**
 * The first step of every audited reveal, in one transaction: `statement` appends the audit row (a masq.audit_*
 * definer function, which also records what it will hand out), the row is sealed with its MAC, COMMIT. Only then
 * may the caller reveal, and only what the committed row names (the definer functions of step 2 check it).
 */
export async function appendSealed<R extends { seq: string }>(pool: pg.Pool, key: AuditKey, statement: RawBuilder<R>): Promise<R> {
  return inTransaction(pool, async (client) => {
    const row = (await classified(statement.execute(masqQueries(client)))).rows[0]!;
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
  await classified(sql`SELECT masq.audit_seal(${seq}, ${auditMac(key.key, row)})`.execute(masqQueries(client)));
}

/** Owner only (rotations): appends a row of `action` and seals it, in the caller's transaction. */
export async function appendAudit(
  client: pg.PoolClient,
  key: AuditKey,
  a: { action: "rotate-pseudonym-key" | "rotate-master-key"; reason: string; selector: Record<string, unknown>; client: Record<string, unknown> },
): Promise<string> {
  const r = await classified(
    sql<{ seq: string }>`SELECT masq.audit_append(${a.action}, ${a.reason}, ${JSON.stringify(a.selector)}, ${JSON.stringify(a.client)}, '{}', ${key.version})::text AS seq`.execute(
      masqQueries(client),
    ),
  );
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
 * when the true value arrives. The flag is an audited action of its own (103_audit.sql): a sealed 'vault-suspect'
 * row naming the values and the committed reveal (`reveal`, and for a subject export the user id it was for) that
 * found them, in the flag's transaction. Returns that row's seq, or undefined when nothing was left to flag.
 */
export async function flagSuspect(
  pool: pg.Pool,
  key: AuditKey,
  reveal: string,
  userId: string | null,
  forged: readonly { kind: Kind; pseudonym: string }[],
): Promise<string | undefined> {
  if (forged.length === 0) return undefined;
  return inTransaction(pool, async (client) => {
    let seq: string | null;
    try {
      const kinds = forged.map((f) => f.kind);
      const pseudonyms = forged.map((f) => f.pseudonym);
      const r = await sql<{ seq: string | null }>`SELECT masq.flag_vault_suspect(${reveal}, ${userId}, ${kinds}, ${pseudonyms}, ${key.version})::text AS seq`.execute(masqQueries(client));
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

// Verifying the trail: the chain of MACs, and checkpoints kept outside the database.

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

/** The only actions of rows from before the chain (an earlier masq's masq.unmask_audit, copied by legacy migration 005). */
export const LEGACY_ACTIONS = new Set(["unmask", "pseudonym"]);

/**
 * Walks the whole trail in seq order and recomputes every MAC. The chain begins at the audit key's chain_start
 * (103_audit.sql): the row there is sealed, with no row before it in the chain (prev_mac NULL); every row after it is
 * sealed and names the MAC of the row before; rows before it (copied from masq.unmask_audit by legacy migration 005) carry
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
    const rows = (await classified(sql<AuditRow>`SELECT ${sql.raw(AUDIT_COLUMNS)} FROM masq.audit WHERE audit.seq > ${after.toString()} ORDER BY audit.seq LIMIT ${PAGE}`.execute(masqQueries(pool)))).rows;
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

/** A row before the chain: only what legacy migration 005 copied (no MAC, an unmask or pseudonym lookup). */
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
