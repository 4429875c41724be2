import pg from "pg";
import type { Logger } from "pino";
import { TransientError } from "../errors.ts";
import { retryTransient } from "../ingest/backoff.ts";
import { classifyPgError } from "./query.ts";
import { parseConnectionString, pgTarget, type PgTarget, targetText } from "./connection.ts";

export interface Db {
  pool: pg.Pool;
  /** The setting and host:port/database this pool connects to, for errors and "waiting" lines. */
  target: PgTarget;
  close(): Promise<void>;
}

export interface DbOptions {
  /** A connection string in any form psql accepts; when absent, pg reads the standard PG* variables (PGHOST, PGUSER, …). */
  databaseUrl?: string | undefined;
  poolSize?: number;
  statementTimeoutMs?: number;
  logger?: Logger;
  /** The setting that gave the URL (--database-url, DATABASE_URL); named in errors. */
  setting?: string | undefined;
  /** One-shot commands wait at most this long for a connection (MASQ_CONNECT_TIMEOUT_SECONDS). */
  connectTimeoutMs?: number | undefined;
}

// date columns come back as 'YYYY-MM-DD' text, not a Date at local midnight.
pg.types.setTypeParser(pg.types.builtins.DATE, (v) => v);

export function createDb(opts: DbOptions = {}): Db {
  const conn = opts.databaseUrl === undefined ? {} : parseConnectionString(opts.databaseUrl);
  const pool = new pg.Pool({
    ...conn,
    max: opts.poolSize ?? 4,
    connectionTimeoutMillis: Math.min(10_000, opts.connectTimeoutMs ?? 10_000),
    idleTimeoutMillis: 30_000,
    // Every network call has a timeout: a query that hangs on a dead connection fails and is retried.
    statement_timeout: opts.statementTimeoutMs ?? 60_000,
    query_timeout: (opts.statementTimeoutMs ?? 60_000) + 5_000,
    keepAlive: true,
    // The connection string's application_name wins (operators tell replicas and Lambdas apart by it).
    application_name: conn.application_name ?? "masq",
  });
  // An idle client whose server went away emits here; without a listener it would crash the process.
  pool.on("error", (err) => opts.logger?.warn({ err: err.message }, "idle Postgres connection lost"));
  // A checked-out client whose connection breaks emits "error" besides failing its query. The query's rejection is
  // what masq acts on (classified, retried); an unheard "error" event would crash the process instead.
  pool.on("connect", (client) => client.on("error", () => undefined));
  return {
    pool,
    target: pgTarget(opts.databaseUrl, opts.setting),
    close: () => pool.end(),
  };
}

/**
 * Runs `fn` in one transaction on a client of its own: COMMIT when it returns, ROLLBACK when it throws (the error
 * passes through). Errors of connecting, BEGIN and COMMIT come out as masq's error classes (transient, data, fatal).
 */
export async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (err) {
    throw classifyPgError(err);
  }
  try {
    await client.query("BEGIN").catch((err: unknown) => Promise.reject(classifyPgError(err)));
    const result = await fn(client);
    await client.query("COMMIT").catch((err: unknown) => Promise.reject(classifyPgError(err)));
    return result;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/**
 * The first contact of a one-shot command with Postgres: waits for a server that is not reachable yet, at most
 * deadlineMs (MASQ_CONNECT_TIMEOUT_SECONDS), and turns a mistake in the settings (password, database, role, TLS)
 * into an error naming the setting before any work starts.
 */
export async function waitForPostgres(db: Db, opts: { deadlineMs: number; signal?: AbortSignal | undefined; onWait?: (text: string) => void }): Promise<void> {
  let waiting = false;
  await retryTransient(
    async () => {
      try {
        await db.pool.query("SELECT 1");
      } catch (err) {
        throw classifyPgError(err, db.target);
      }
    },
    {
      what: "connecting to Postgres",
      isTransient: (e) => e instanceof TransientError,
      deadlineMs: opts.deadlineMs,
      object: targetText(db.target),
      // Once, when the first attempt failed: a person then knows why nothing happens for up to deadlineMs.
      onRetry: () => {
        if (!waiting) opts.onWait?.(`waiting for Postgres at ${db.target.where} (${db.target.setting}), up to ${Math.round(opts.deadlineMs / 1000)} s`);
        waiting = true;
      },
      ...(opts.signal ? { signal: opts.signal } : {}),
    },
  );
}

/** The "waiting for Postgres at …" line of a one-shot command, on stderr (stdout keeps the command's output). */
export function sayWaiting(text: string): void {
  process.stderr.write(`masq: ${text}\n`);
}
