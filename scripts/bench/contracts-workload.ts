import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type pg from "pg";
import { mulberry32 } from "../../src/ops/synthetic-events.ts";
import { startCpuMeter } from "./cpu-meter.ts";
import type { BenchEnv } from "./environment.ts";
import { deleteQueue, fillQueue } from "./fill-queue.ts";
import { context, measureMasqPhase, quiet, type ComparisonOptions, type MasqMeasurement, type PhaseContext } from "./main-comparison.ts";
import { runMasq } from "./masq-e2e.ts";
import { BENCH_KEY, makeWorkload } from "./workload.ts";

/**
 * The benchmark's second workload: three event types on one queue under a privacy contract
 * (bench/contracts/three-types.yaml): signups, purchases and page views, with eight personal fields between them
 * pseudonymised, hashed or generalised, so that masq's contract path is measured as its login path is.
 */
export const THREE_TYPES_CONTRACT = fileURLToPath(new URL("../../bench/contracts/three-types.yaml", import.meta.url));

/** Each event type's table (as the contract names them) and the share of the queue it has. */
const TYPES = [
  { type: "page_view", table: "bench_page_views", share: 0.6 },
  { type: "purchase", table: "bench_purchases", share: 0.25 },
  { type: "signup", table: "bench_signups", share: 0.15 },
] as const;

export interface ContractsWorkload {
  bodies: string[];
  /** Rows each table must hold. */
  rows: Record<string, number>;
  malformed: number;
  byReason: Record<string, number>;
}

/** The malformed messages, one of each in turn, made from a valid purchase or signup, and the reason masq must quarantine each with. */
type Event = Record<string, unknown>;
const MALFORMED: readonly { reason: string; make: (purchase: Event, signup: Event) => Event | string }[] = [
  { reason: "unknown_event", make: (p) => ({ ...p, type: "refund" }) },
  { reason: "unclassified_field", make: (p) => ({ ...p, card: { last4: "4242", cvc: "123" } }) },
  { reason: "unclassified_field", make: (_, s) => ({ ...s, password: "hunter2" }) },
  { reason: "wrong_type", make: (p) => ({ ...p, amount_cents: "19.99" }) },
  { reason: "missing_field", make: (_, s) => ({ type: "signup", account_id: s.account_id, ip: s.ip, country: "DE" }) },
  { reason: "invalid_json", make: () => "{not json" },
];

/**
 * Deterministic for a seed. Every valid event has its own account_id (the message's index), so that
 * count(DISTINCT account_id) = count(*) proves no message was written twice; emails, IPs and sessions repeat with a
 * skew, as real ones do, so the vault sees repeated values.
 */
export function makeContractsWorkload(count: number, opts: { seed: number; malformedRate: number }): ContractsWorkload {
  const rnd = mulberry32(opts.seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const skewed = <T>(pool: readonly T[]) => pool[Math.floor(pool.length * rnd() ** 3)]!;
  const emails = Array.from({ length: Math.max(1, Math.floor(count / 5)) }, (_, i) => `user${i}.${int(1e6)}@example.${["com", "org", "net"][i % 3]}`);
  const ips = Array.from({ length: Math.max(1, Math.floor(count / 6)) }, () =>
    rnd() < 0.85 ? `${1 + int(223)}.${int(256)}.${int(256)}.${1 + int(254)}` : `2001:db8:${int(65536).toString(16)}:${int(65536).toString(16)}::${(1 + int(65535)).toString(16)}`,
  );
  const sessions = Array.from({ length: Math.max(1, Math.floor(count / 3)) }, () => `s-${int(2 ** 32).toString(16)}${int(2 ** 32).toString(16)}`);
  const paths = ["/", "/pricing", "/docs", "/docs/contracts", "/blog/launch", "/account", "/checkout", "/search"];
  const rows: Record<string, number> = Object.fromEntries(TYPES.map((t) => [t.table, 0]));
  const byReason: Record<string, number> = {};
  let malformed = 0;
  const bodies = new Array<string>(count);
  for (let i = 0; i < count; i++) {
    const account_id = `a-${i.toString(16).padStart(10, "0")}`;
    const pick = rnd();
    const t = pick < TYPES[0].share ? TYPES[0] : pick < TYPES[0].share + TYPES[1].share ? TYPES[1] : TYPES[2];
    const purchase = (): Event => ({ type: "purchase", account_id, email: skewed(emails), card: { last4: String(int(10000)).padStart(4, "0"), ...(rnd() < 0.9 ? { brand: ["visa", "mastercard", "amex"][int(3)] } : {}) }, amount_cents: 100 + int(50_000) });
    const signup = (): Event => ({ type: "signup", account_id, email: skewed(emails), ...(rnd() < 0.7 ? { phone: `+49 30 ${String(int(1e7)).padStart(7, "0")}` } : {}), ip: skewed(ips), country: ["DE", "US", "FR", "BR", "IN", "JP"][int(6)] });
    if (rnd() < opts.malformedRate) {
      const m = MALFORMED[malformed % MALFORMED.length]!;
      const bad = m.make(purchase(), signup());
      bodies[i] = typeof bad === "string" ? bad : JSON.stringify(bad);
      byReason[m.reason] = (byReason[m.reason] ?? 0) + 1;
      malformed++;
      continue;
    }
    const event: Event =
      t.type === "page_view"
        ? { type: "page_view", account_id, ip: skewed(ips), session_id: skewed(sessions), path: paths[int(paths.length)], ...(rnd() < 0.2 ? { search: `query ${int(1000)}` } : {}), viewed_at: new Date(1_765_000_000_000 + int(86_400_000)).toISOString() }
        : t.type === "purchase"
          ? purchase()
          : signup();
    bodies[i] = JSON.stringify(event);
    rows[t.table]!++;
  }
  return { bodies, rows, malformed, byReason };
}

export interface ContractsVerification {
  ok: boolean;
  problems: string[];
}

/**
 * From the database alone: each table holds exactly its valid events, none twice; one quarantine record per malformed
 * message with the expected reason, each with an encrypted original; one vault value per distinct pseudonym of the
 * recoverable kinds (email over signups and purchases, which share the kind; phone; the signups' ip), and none of the
 * hashed ones; one ledger entry per message.
 */
export async function verifyContractsRun(pool: pg.Pool, w: ContractsWorkload): Promise<ContractsVerification> {
  const problems: string[] = [];
  for (const [table, want] of Object.entries(w.rows)) {
    const r = (await pool.query<{ n: number; d: number }>(`SELECT count(*)::int AS n, count(DISTINCT account_id)::int AS d FROM public.${table}`)).rows[0]!;
    if (r.n !== want) problems.push(`${table} holds ${r.n} rows, expected ${want}`);
    if (r.d !== r.n) problems.push(`${table}: ${r.n - r.d} messages were written more than once`);
  }
  const q = await pool.query<{ reason: string; n: number }>("SELECT reason, count(*)::int AS n FROM masq.quarantine GROUP BY reason");
  const byReason = Object.fromEntries(q.rows.map((x) => [x.reason, x.n]));
  for (const reason of new Set([...Object.keys(byReason), ...Object.keys(w.byReason)])) {
    if ((byReason[reason] ?? 0) !== (w.byReason[reason] ?? 0)) problems.push(`quarantine reason ${reason}: ${byReason[reason] ?? 0}, expected ${w.byReason[reason] ?? 0}`);
  }
  const v = (
    await pool.query<{ vault: Record<string, number> | null; email: number; phone: number; ip: number; unsealed: number; ledger: number }>(
      `SELECT (SELECT json_object_agg(kind, n) FROM (SELECT kind, count(*)::int AS n FROM masq.vault GROUP BY kind) k) AS vault,
              (SELECT count(DISTINCT e)::int FROM (SELECT masked_email AS e FROM public.bench_signups UNION ALL SELECT masked_email FROM public.bench_purchases) m) AS email,
              (SELECT count(DISTINCT masked_phone)::int FROM public.bench_signups) AS phone,
              (SELECT count(DISTINCT masked_ip)::int FROM public.bench_signups) AS ip,
              (SELECT count(*)::int FROM masq.quarantine WHERE body_ciphertext IS NULL) AS unsealed,
              (SELECT count(*)::int FROM masq.ingest_ledger) AS ledger`,
    )
  ).rows[0]!;
  const vault = v.vault ?? {};
  const want = { email: v.email, phone: v.phone, ip: v.ip };
  if (JSON.stringify(Object.fromEntries(Object.entries(vault).sort())) !== JSON.stringify(Object.fromEntries(Object.entries(want).sort()))) {
    problems.push(`masq.vault holds ${JSON.stringify(vault)} values by kind, expected ${JSON.stringify(want)} (the distinct pseudonyms in the tables)`);
  }
  if (v.unsealed > 0) problems.push(`${v.unsealed} quarantine records have no encrypted original`);
  if (v.ledger !== w.bodies.length) problems.push(`masq.ingest_ledger holds ${v.ledger} message ids, expected ${w.bodies.length}`);
  return { ok: problems.length === 0, problems };
}

export interface ContractsPhaseResult extends PhaseContext {
  messages: number;
  /** Messages per second from "pipeline started" to the drain's end line (or exit). */
  perSecond: number;
  cpuUsPerMessage: number;
  maxRssMb: number;
  wallSeconds: number;
  verification: ContractsVerification;
}

const run = promisify(execFile);

/**
 * `masq migrate` with the contract (it creates the three tables), then `masq run --drain` of the workload under it,
 * as the main comparison runs masq on login events.
 */
export async function measureContractsPhase(env: BenchEnv, w: ContractsWorkload, o: ComparisonOptions): Promise<ContractsPhaseResult> {
  const n = w.bodies.length;
  const bin = o.masqBin ?? fileURLToPath(new URL("../../bin/masq", import.meta.url));
  const settings = { DATABASE_URL: env.databaseUrl, MASQ_MASTER_KEY: BENCH_KEY.toString("hex"), MASQ_CONTRACT: THREE_TYPES_CONTRACT, MASQ_LOG_LEVEL: "warn" };
  await run(process.execPath, [bin, "migrate"], { env: { PATH: [path.dirname(process.execPath), process.env.PATH].join(path.delimiter), HOME: process.env.HOME, ...settings } });
  await env.db.pool.query(`TRUNCATE ${TYPES.map((t) => `public.${t.table}`).join(", ")}, masq.ingest_ledger, masq.quarantine, masq.vault`);
  const admin = env.sqsClient(env.sqs.endpoint, 16);
  try {
    o.log(`  masq, three event types under a contract: filling a queue with ${n.toLocaleString("en-US")} messages…`);
    const filled = await fillQueue(admin, "bench-contracts", w.bodies);
    const background = await quiet(o);
    o.log(`  masq: bin/masq run --drain with MASQ_CONTRACT=${path.relative(process.cwd(), THREE_TYPES_CONTRACT)}…`);
    const meter = startCpuMeter(env.sqs.pid());
    const r = await runMasq({
      queueUrl: filled.queueUrl,
      sqsEndpoint: o.endpoint ?? env.sqs.endpoint,
      databaseUrl: env.databaseUrl,
      masterKey: BENCH_KEY.toString("hex"),
      receivers: o.receivers,
      batchSize: o.batchSize,
      writers: o.writers,
      bin: o.masqBin,
      nodeOptions: o.nodeOptions,
      memoryLimit: o.memoryLimit,
      env: { MASQ_CONTRACT: THREE_TYPES_CONTRACT },
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    const ctx = context(meter, background, n);
    const verification = await verifyContractsRun(env.db.pool, w);
    await deleteQueue(admin, filled.queueUrl);
    const seconds = ((r.drainedAt ?? r.exitedAt) - r.pipelineStartedAt) / 1000;
    return { ...ctx, messages: n, perSecond: n / seconds, cpuUsPerMessage: ((r.cpuUserMs + r.cpuSystemMs) * 1000) / n, maxRssMb: r.maxRssMb, wallSeconds: r.wallSeconds, verification };
  } finally {
    admin.destroy();
  }
}

/** One repetition: masq on login events and on the three event types, the same number of messages each. */
export interface ContractsRun {
  login: MasqMeasurement;
  contracts: ContractsPhaseResult;
}

export interface ContractsResult {
  messages: number;
  /** The medians by CPU per message (each of its own); every repetition in runs. */
  login: MasqMeasurement;
  contracts: ContractsPhaseResult;
  runs: ContractsRun[];
  ok: boolean;
}

/**
 * The contract path beside the login path on this harness: per repetition, masq drains the same number of login
 * events (the main comparison's workload shape) and of three-type events, interleaved, so that the two are measured
 * on the same minute of the machine.
 */
export async function runContractsWorkload(env: BenchEnv, messages: number, o: ComparisonOptions & { repeat: number; seed: number; malformedRate: number }): Promise<ContractsResult> {
  const login = makeWorkload(messages, { seed: o.seed + 4, malformedRate: o.malformedRate });
  const three = makeContractsWorkload(messages, { seed: o.seed + 4, malformedRate: o.malformedRate });
  const runs: ContractsRun[] = [];
  for (let i = 0; i < o.repeat; i++) {
    o.log(`contracts workload: ${messages.toLocaleString("en-US")} messages, login events then three event types (repetition ${i + 1}):`);
    const l = await measureMasqPhase(env, login, o);
    const c = await measureContractsPhase(env, three, o);
    o.log(`  → login ${Math.round(l.cpuUsPerMessage)} µs/msg, ${Math.round(l.perSecond).toLocaleString("en-US")} msg/s; three types ${Math.round(c.cpuUsPerMessage)} µs/msg, ${Math.round(c.perSecond).toLocaleString("en-US")} msg/s${c.verification.ok ? "" : ` — INCORRECT: ${c.verification.problems.join("; ")}`}`);
    runs.push({ login: l, contracts: c });
  }
  const median = <T>(items: readonly T[], by: (t: T) => number): T => [...items].sort((a, b) => by(a) - by(b))[Math.floor((items.length - 1) / 2)]!;
  return {
    messages,
    login: median(runs.map((r) => r.login), (m) => m.cpuUsPerMessage),
    contracts: median(runs.map((r) => r.contracts), (m) => m.cpuUsPerMessage),
    runs,
    ok: runs.every((r) => r.login.verification.ok && r.contracts.verification.ok),
  };
}
