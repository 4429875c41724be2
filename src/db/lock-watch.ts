import type pg from "pg";
import { TransientError } from "../errors.ts";
import { classifyPgError } from "./query.ts";

/** A session that held a watched statement up, as masq.end_lock_blockers (104_lifecycle.sql) reported it. */
export interface Blocker {
  pid: number;
  login: string | null;
  /** What the statement waited for ("relation masq.vault_epoch", "a row of masq.quarantine"). */
  lock: string;
  /** 'ended', or why it was not ('superuser', 'schema owner', 'not permitted (pg_signal_backend)', …). */
  outcome: string;
}

export interface LockWatch {
  /** What the statement waits for, in words ("the active pseudonym key"), for the error and the report. */
  what: string;
  /** Told once about each session that was ended, with `what`. */
  onEnded?: ((b: Blocker, what: string) => void) | undefined;
}

/** The server ends nothing before the waiter waited 1 s (104_lifecycle.sql); asking earlier is wasted. */
const FIRST_ASK_MS = 1000;
const ASK_EVERY_MS = 300;

/**
 * Runs `fn`, whose statements run on `client`, while another connection of `pool` asks the server, from 1 s into a
 * lock wait on, to end the sessions that hold it up (masq.end_lock_blockers): only sessions of masq's roles, never
 * the owner's or a superuser's. A statement of masq's that waits for a lock therefore waits about 1 s for what any
 * login of masq_ingest, masq_unmask or masq_erase holds, whatever that session did with its own timeouts. A wait
 * that still runs out (its lock_timeout) because the holder could not be ended fails with an error naming the
 * session, its login and why it was not ended, never as an outage. The pool needs a connection to spare.
 */
export async function withLockWatch<T>(pool: pg.Pool, client: pg.PoolClient, watch: LockWatch, fn: () => Promise<T>): Promise<T> {
  return watchBackend(pool, await backendPid(client, undefined), watch, fn);
}

/**
 * The server backend of `client` (pg_backend_pid(), never pg's own client.processID), in the same round trip as the
 * session's statement_timeout when one is given.
 */
async function backendPid(client: pg.PoolClient, statementTimeoutMs: number | undefined): Promise<number> {
  const r = await (statementTimeoutMs === undefined
    ? client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")
    : client.query<{ pid: number }>("SELECT set_config('statement_timeout', $1, false), pg_backend_pid() AS pid", [String(statementTimeoutMs)])
  ).catch((err: unknown) => Promise.reject(classifyPgError(err)));
  return r.rows[0]!.pid;
}

async function watchBackend<T>(pool: pg.Pool, waiter: number, watch: LockWatch, fn: () => Promise<T>): Promise<T> {
  const seen = new Map<number, Blocker>();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let asking: Promise<void> = Promise.resolve();
  const ask = async () => {
    try {
      const { rows } = await pool.query<Blocker>("SELECT pid, login, lock, outcome FROM masq.end_lock_blockers($1)", [waiter]);
      for (const b of rows) {
        if (b.outcome === "ended" && seen.get(b.pid)?.outcome !== "ended") watch.onEnded?.(b, watch.what);
        seen.set(b.pid, b);
      }
    } catch {
      // The watch is a help, not a step: a failed ask leaves the wait to its lock_timeout, whose error says what held it.
    }
  };
  const schedule = (ms: number) => {
    timer = setTimeout(() => {
      asking = ask().then(() => {
        if (!stopped) schedule(ASK_EVERY_MS);
      });
    }, ms);
  };
  schedule(FIRST_ASK_MS);
  try {
    return await fn();
  } catch (err) {
    throw explainLockTimeout(err, watch.what, [...seen.values()]);
  } finally {
    stopped = true;
    clearTimeout(timer);
    await asking;
  }
}

/** lock_not_available (lock_timeout) and query_canceled (statement_timeout), as classifyPgError names them. */
const TIMED_OUT = new Set(["pg_55P03", "pg_57014"]);

/** A lock wait that timed out, told as what held it: "the vault epoch is held by session 4711 of login ingest_svc". */
export function explainLockTimeout(err: unknown, what: string, blockers: Blocker[]): unknown {
  if (!(err instanceof TransientError) || !TIMED_OUT.has(err.cause_)) return err;
  const held = blockers.filter((b) => b.outcome !== "ended");
  if (held.length === 0) return err;
  const who = held.map((b) => `session ${b.pid} of login ${b.login ?? "(unknown)"}`).join(", ");
  const first = held[0]!;
  return new TransientError(`${what} is held by ${who}: ${err.message}`, err.cause_, {
    what: `${what} is held by ${who}`,
    object: first.lock,
    hint: `${whyNotEnded(first.outcome)}: end it (SELECT pg_terminate_backend(${first.pid})) or let it finish, and run this again`,
  });
}

function whyNotEnded(outcome: string): string {
  switch (outcome) {
    case "not permitted (pg_signal_backend)":
      return "masq may not end it: the schema owner lacks pg_signal_backend (GRANT it, deploy/sql/login-roles.sql)";
    case "superuser":
      return "masq never ends a superuser's session";
    case "schema owner":
      return "masq never ends the schema owner's session";
    case "not a masq role":
      return "it is not a login of a masq role, which masq never ends";
    default:
      return `masq did not end it (${outcome})`;
  }
}

/** The line a command prints when it ended a session: what a person needs to find it in the server's log. */
export function endedLine(b: Blocker, what: string): string {
  return `ended session ${b.pid} of login ${b.login ?? "(unknown)"}, which held ${what} (${b.lock}) for more than 1 s; its transaction rolled back`;
}

/**
 * One statement on a connection of its own whose lock waits are watched (withLockWatch); errors as masq's classes.
 * `statementTimeoutMs` bounds this statement alone (the connection's own limit is restored after it).
 */
export async function watchedQuery<R extends pg.QueryResultRow>(
  pool: pg.Pool,
  watch: LockWatch,
  text: string,
  values: unknown[],
  statementTimeoutMs?: number,
): Promise<pg.QueryResult<R>> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (err) {
    throw classifyPgError(err);
  }
  let broken = false;
  try {
    const waiter = await backendPid(client, statementTimeoutMs);
    const result = await watchBackend(pool, waiter, watch, () => client.query<R>(text, values).catch((err: unknown) => Promise.reject(classifyPgError(err))));
    if (statementTimeoutMs !== undefined) await client.query("RESET statement_timeout");
    return result;
  } catch (err) {
    // A connection whose limit may not have been restored is not given back to the pool.
    broken = statementTimeoutMs !== undefined;
    throw err;
  } finally {
    client.release(broken);
  }
}
