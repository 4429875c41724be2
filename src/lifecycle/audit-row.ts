import { createHmac, timingSafeEqual } from "node:crypto";
import type pg from "pg";
import { query } from "../db/query.ts";
import { userInfo } from "node:os";
import { describeError } from "../errors.ts";
import type { KeyProvider } from "../vault/key-provider.ts";

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
  return (await query<AuditRow>(db, `SELECT ${AUDIT_COLUMNS} FROM masq.audit WHERE seq = $1`, [seq])).rows[0];
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
