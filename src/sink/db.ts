import pg from "pg";
import type { Logger } from "pino";
import { parseConnectionString } from "./connection-string.ts";
import { pgTarget, type PgTarget } from "./pg-target.ts";

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
