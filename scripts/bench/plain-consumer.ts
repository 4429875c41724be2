import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type pg from "pg";

/**
 * The `sqs-consumer` + pg consumer's phase (plain-consumer-process.ts): a whole process, spawn to exit, draining the
 * same queue masq drains in the drain start-up phase, so that masq's spawn-to-exit rate can be set against the
 * common way of writing such a consumer.
 */
export interface PlainConsumerResult {
  messages: number;
  /** Spawn to exit. */
  wallSeconds: number;
  /** messages ÷ wallSeconds. */
  wallPerSecond: number;
  /** Rows it inserted (every message whose body is a JSON object). */
  inserted: number;
  /** CPU time (user + system) of the whole process per message, µs, start-up included. */
  cpuUsPerMessage: number;
  maxRssMb: number;
}

export const PLAIN_TABLE = "public.plain_logins";

/** The plain consumer's table: the event's fields as they come, no masking, no constraints beyond a key. */
export async function createPlainTable(pool: pg.Pool): Promise<void> {
  await pool.query(`CREATE TABLE IF NOT EXISTS ${PLAIN_TABLE} (
    id bigserial PRIMARY KEY, message_id text NOT NULL, user_id text, device_type text, ip text, device_id text,
    locale text, app_version text, create_date text)`);
  await pool.query(`TRUNCATE ${PLAIN_TABLE}`);
}

/** The row the plain consumer inserts for a body, or null when the body is not a JSON object (it skips those). */
export function plainRow(messageId: string, body: string): unknown[] | null {
  let e: unknown;
  try {
    e = JSON.parse(body);
  } catch {
    return null;
  }
  if (typeof e !== "object" || e === null || Array.isArray(e)) return null;
  const o = e as Record<string, unknown>;
  const text = (v: unknown) => (v === undefined || v === null ? null : typeof v === "string" ? v : JSON.stringify(v));
  return [messageId, text(o.user_id), text(o.device_type), text(o.ip), text(o.device_id), text(o.locale), text(o.app_version), text(o.create_date)];
}

const PROCESS = fileURLToPath(new URL("./plain-consumer-process.ts", import.meta.url));

/** Runs the plain consumer to the end and checks its table: one row per JSON-object message, none twice. */
export async function runPlainConsumer(opts: { endpoint: string; queueUrl: string; databaseUrl: string; pool: pg.Pool; bodies: readonly string[] }): Promise<PlainConsumerResult> {
  const started = performance.now();
  const child = spawn(process.execPath, [PROCESS], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, DATABASE_URL: opts.databaseUrl, PLAIN_ENDPOINT: opts.endpoint, PLAIN_QUEUE_URL: opts.queueUrl },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  const wallSeconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`plain consumer exited with ${code}: ${err.trim()}`);
  const r = JSON.parse(out.trim().split("\n").at(-1)!) as { inserted: number; cpuUs: number; maxRssMb: number };
  const expected = opts.bodies.filter((b, i) => plainRow(String(i), b) !== null).length;
  const { rows } = await opts.pool.query<{ n: number; d: number }>(`SELECT count(*)::int AS n, count(DISTINCT message_id)::int AS d FROM ${PLAIN_TABLE}`);
  if (rows[0]!.n !== expected || rows[0]!.d !== expected) throw new Error(`plain consumer wrote ${rows[0]!.n} rows (${rows[0]!.d} distinct messages); expected ${expected}`);
  const n = opts.bodies.length;
  return { messages: n, wallSeconds, wallPerSecond: n / wallSeconds, inserted: r.inserted, cpuUsPerMessage: r.cpuUs / n, maxRssMb: r.maxRssMb };
}
