import { sql } from "kysely";
import { masqQueries } from "../db/schema.ts";
import { auditCounts, auditCountsText, AUDIT_COLUMNS, type AuditRow, formatCheckpoint, LEGACY_ACTIONS, parseCheckpoint, verifyAudit } from "../lifecycle/audit.ts";
import { existingAuditKey, subjectFingerprint } from "../keys/audit-key.ts";
import { ConfigError, describeError } from "../errors.ts";
import { runAudited } from "../lifecycle/audited-command.ts";
import type { Db } from "../db/pool.ts";

/**
 * `masq audit list [--limit N] [--json] [--user-id <id>]`: the trail, newest first. Who acted as the server recorded
 * it (login role, role in effect); what the client reported of itself is shown apart. --user-id keeps the rows that
 * name that user (subject erase and export name a user by a keyed fingerprint: computing it needs the audit key).
 */
export async function auditListCommand(flags: Record<string, unknown>): Promise<number> {
  const limit = typeof flags.limit === "number" ? flags.limit : 50;
  const userId = typeof flags.userId === "string" ? flags.userId : undefined;
  const listWith = async (db: Db, subject: string | null) => {
    // Raw pg errors, as before: runAudited's catch-all classifies them naming this command's database (fromPostgres).
    const { rows } = await sql<AuditRow>`SELECT ${sql.raw(AUDIT_COLUMNS)} FROM masq.audit
      WHERE ${subject}::text IS NULL OR ${subject}::text = ANY (subjects) ORDER BY audit.seq DESC LIMIT ${limit}`.execute(masqQueries(db));
    return rows;
  };
  const run = async (db: Db, subject: string | null) => {
    const rows = await listWith(db, subject);
    if (flags.json === true) {
      const out = rows.map((r) => ({
        seq: Number(r.seq),
        at: r.at,
        action: r.action,
        loginRole: r.login_role,
        effectiveRole: r.effective_role,
        clientReported: JSON.parse(r.client_reported) as unknown,
        reason: r.reason,
        selector: JSON.parse(r.selector) as unknown,
        subjects: r.subjects,
        valueCount: r.value_count,
        counts: auditCounts(r),
        sealed: r.mac !== null,
      }));
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      return 0;
    }
    if (rows.length === 0) {
      process.stdout.write("the audit trail is empty\n");
      return 0;
    }
    for (const r of rows) {
      const as = r.effective_role === r.login_role ? r.login_role : `${r.login_role} (as ${r.effective_role})`;
      const client = Object.entries(JSON.parse(r.client_reported) as Record<string, unknown>).map(([k, v]) => `${k}=${String(v)}`);
      process.stdout.write(
        `${r.seq.padStart(6)}  ${r.at}  ${r.action.padEnd(20)} ${as}  ${auditCountsText(auditCounts(r))}  reason: ${JSON.stringify(r.reason)}` +
          `${client.length > 0 ? `  client-reported: ${client.join(", ")}` : ""}${r.mac === null ? "  [from before the chain]" : ""}\n`,
      );
    }
    return 0;
  };
  if (userId === undefined) return runAudited(flags, READ_TRAIL, ({ db }) => run(db, null));
  return runAudited(flags, { ...READ_TRAIL, keys: "now" }, async ({ db, keys }) => {
    const provider = keys();
    const key = await existingAuditKey(db.pool, provider);
    if (key === undefined) return run(db, "");
    try {
      return await run(db, subjectFingerprint(key, userId));
    } finally {
      key.key.fill(0);
    }
  });
}

/**
 * `masq audit verify [--against <checkpoint>]`: recomputes every MAC of the trail with the audit key (which needs the
 * master key). Exit 0 with the number of rows checked; exit 1 naming the first row changed, removed or reordered,
 * or, with a checkpoint, when rows were cut from the end since it was taken.
 */
export async function auditVerifyCommand(flags: Record<string, unknown>): Promise<number> {
  const against = typeof flags.against === "string" ? parseCheckpoint(flags.against) : undefined;
  if (typeof flags.against === "string" && against === undefined) {
    throw new ConfigError("--against", "must be a checkpoint as `masq audit checkpoint` prints it: masq-audit:<row>:<64 hex digits>");
  }
  return runAudited(flags, { ...READ_TRAIL, keys: "now" }, async ({ db, keys }) => {
    const provider = keys();
    // Verifying reads: it never makes the audit key. Without one, no row was ever sealed.
    const key = await existingAuditKey(db.pool, provider);
    if (key === undefined) return noAuditKey(db, against === undefined ? 0 : 1);
    try {
      const r = await verifyAudit(db.pool, key, against);
      if (!r.ok) {
        process.stderr.write(`masq: the audit trail does not verify: ${r.problem}\n`);
        return 1;
      }
      const legacy = r.legacy > 0 ? `; ${r.legacy} row(s) from before the chain began at row ${key.chainStart} carry no MAC and are not covered` : "";
      const cut = against === undefined ? "" : `; nothing was cut since checkpoint row ${against.seq}`;
      process.stdout.write(`audit trail verified: ${r.checked} row(s) checked${cut}${legacy}\n`);
      return 0;
    } finally {
      key.key.fill(0);
    }
  });
}

/**
 * `masq audit checkpoint`: the head of the trail (its last row and that row's MAC), verified first. Keep it outside
 * the database (a ticket, a log, a SIEM): `verify --against` it later proves that no row up to it was removed.
 */
export async function auditCheckpointCommand(flags: Record<string, unknown>): Promise<number> {
  return runAudited(flags, { ...READ_TRAIL, keys: "now" }, async ({ db, keys }) => {
    const provider = keys();
    const key = await existingAuditKey(db.pool, provider);
    if (key === undefined) {
      process.stderr.write("masq: the audit trail has no sealed row yet: nothing to checkpoint\n");
      return 1;
    }
    try {
      const r = await verifyAudit(db.pool, key);
      if (!r.ok) {
        process.stderr.write(`masq: no checkpoint: the audit trail does not verify: ${r.problem}\n`);
        return 1;
      }
      if (r.head === undefined) {
        process.stderr.write("masq: the audit trail has no sealed row yet: nothing to checkpoint\n");
        return 1;
      }
      process.stdout.write(`${formatCheckpoint(r.head)}\n`);
      return 0;
    } finally {
      key.key.fill(0);
    }
  });
}

/**
 * Before the first audited action there is no audit key: only rows from before the chain can be there (an earlier
 * masq's unsealed unmask and pseudonym rows). Anything else means the key and the chain were removed.
 */
async function noAuditKey(db: Db, exitWithCheckpoint: number): Promise<number> {
  const { rows } = await sql<{ total: number; sealed: number; other: string | null }>`SELECT count(*)::int AS total, count(mac)::int AS sealed,
      min(seq) FILTER (WHERE NOT (action = ANY (${[...LEGACY_ACTIONS]})))::text AS other FROM masq.audit`.execute(masqQueries(db));
  const r = rows[0]!;
  if (r.sealed > 0) {
    process.stderr.write("masq: the audit trail does not verify: it holds sealed rows but masq.audit_keys has no audit key (it was removed)\n");
    return 1;
  }
  if (r.other !== null) {
    process.stderr.write(
      `masq: the audit trail does not verify: row ${r.other} is not a row from before the chain (only unmask and pseudonym rows are), ` +
        "but masq.audit_keys has no audit key (the key and the chain's MACs were removed)\n",
    );
    return 1;
  }
  if (exitWithCheckpoint !== 0) {
    process.stderr.write("masq: the audit trail does not verify: the checkpoint names a row, but no row was ever sealed here\n");
    return 1;
  }
  const legacy = r.total > 0 ? `; ${r.total} row(s) from before the chain began carry no MAC and are not covered` : "";
  process.stdout.write(`audit trail verified: 0 row(s) checked (no audited action yet)${legacy}\n`);
  return 0;
}

/**
 * The trail is read at once, without waiting for Postgres; a failure is the server's own words, with the role a
 * reader needs when it was a permission.
 */
const READ_TRAIL = {
  wait: false,
  refuse: (err: unknown): number => {
    if (err instanceof ConfigError) throw err;
    const text = describeError(err);
    const hint = /permission denied/.test(text) ? ": reading the audit trail needs the masq_unmask role (or the schema owner)" : "";
    process.stderr.write(`masq: ${text}${hint}\n`);
    return 1;
  },
} as const;
