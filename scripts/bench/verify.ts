import type pg from "pg";
import type { Workload } from "./workload.ts";

export interface Verification {
  ok: boolean;
  problems: string[];
  rows: number;
  distinctUsers: number;
  ledger: number;
  quarantined: number;
}

/**
 * Correctness of one run, from the database alone: exactly one row per valid message (and no message written
 * twice: every valid message has its own user_id), one quarantine record per malformed message with the expected
 * reason, one ledger entry per message sent, each for an id that was sent, and one vault row per distinct
 * pseudonym in the table (every original kept, once), and an encrypted original for every quarantined message.
 */
export async function verifyRun(pool: pg.Pool, w: Workload, sentIds?: ReadonlySet<string> | ReadonlyMap<string, unknown>): Promise<Verification> {
  const problems: string[] = [];
  const r = (await pool.query<{ rows: number; users: number }>("SELECT count(*)::int AS rows, count(DISTINCT user_id)::int AS users FROM public.user_logins")).rows[0]!;
  const ledger = (await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.ingest_ledger")).rows[0]!.n;
  const q = await pool.query<{ reason: string; n: number }>("SELECT reason, count(*)::int AS n FROM masq.quarantine GROUP BY reason");
  const byReason = Object.fromEntries(q.rows.map((x) => [x.reason, x.n]));
  const quarantined = q.rows.reduce((a, x) => a + x.n, 0);
  const total = w.valid + w.malformed;

  if (r.rows !== w.valid) problems.push(`user_logins holds ${r.rows} rows, expected ${w.valid}`);
  if (r.users !== r.rows) problems.push(`${r.rows - r.users} messages were written more than once`);
  if (quarantined !== w.malformed) problems.push(`masq.quarantine holds ${quarantined} records, expected ${w.malformed}`);
  for (const reason of new Set([...Object.keys(byReason), ...Object.keys(w.byReason)])) {
    if ((byReason[reason] ?? 0) !== (w.byReason[reason] ?? 0)) problems.push(`quarantine reason ${reason}: ${byReason[reason] ?? 0}, expected ${w.byReason[reason] ?? 0}`);
  }
  const v = (
    await pool.query<{ vault: number; distinct: number; unsealed: number }>(
      `SELECT (SELECT count(*) FROM masq.vault)::int AS vault,
              (SELECT count(DISTINCT masked_ip) + count(DISTINCT masked_device_id) FROM public.user_logins)::int AS distinct,
              (SELECT count(*) FROM masq.quarantine WHERE body_ciphertext IS NULL)::int AS unsealed`,
    )
  ).rows[0]!;
  if (v.vault !== v.distinct) problems.push(`masq.vault holds ${v.vault} values, expected ${v.distinct} (the distinct pseudonyms in user_logins)`);
  if (v.unsealed > 0) problems.push(`${v.unsealed} quarantine records have no encrypted original`);
  if (ledger !== total) problems.push(`masq.ingest_ledger holds ${ledger} message ids, expected ${total}`);
  if (sentIds !== undefined) {
    const ids = await pool.query<{ message_id: string }>("SELECT message_id FROM masq.ingest_ledger");
    const unknown = ids.rows.filter((x) => !sentIds.has(x.message_id)).length;
    if (unknown > 0) problems.push(`${unknown} ledger ids were never sent`);
  }
  return { ok: problems.length === 0, problems, rows: r.rows, distinctUsers: r.users, ledger, quarantined };
}

export interface LagStats {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The last commit (ms since epoch): ledger committed_at is the committing transaction's start time. */
  lastCommitAt: number;
  firstCommitAt: number;
}

/** End-to-end lag per message: the commit of its batch (ledger committed_at) minus when it was sent. */
export async function commitLag(pool: pg.Pool, sentAt: ReadonlyMap<string, number>): Promise<LagStats> {
  const res = await pool.query<{ message_id: string; ms: number }>("SELECT message_id, (extract(epoch FROM committed_at) * 1000)::float8 AS ms FROM masq.ingest_ledger");
  const lags: number[] = [];
  let first = Infinity;
  let last = 0;
  for (const row of res.rows) {
    first = Math.min(first, row.ms);
    last = Math.max(last, row.ms);
    const sent = sentAt.get(row.message_id);
    if (sent !== undefined) lags.push(row.ms - sent);
  }
  lags.sort((a, b) => a - b);
  return { p50Ms: percentile(lags, 0.5), p99Ms: percentile(lags, 0.99), maxMs: lags.at(-1) ?? 0, lastCommitAt: last, firstCommitAt: first };
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}
