/**
 * How masq's own code queries Postgres outside the hot path, and how whatever pg throws becomes one of masq's error
 * classes (errors.ts): classified once, where the call is made, so that the caller decides by class whether to wait and
 * retry, quarantine, or stop.
 */
import type pg from "pg";
import { ConfigError, DataError, FatalError, TransientError } from "../errors.ts";
import { targetText, type PgTarget } from "./connection.ts";

/** A query whose failure comes out as masq's error classes (transient, data, fatal, configuration). */
export async function query<R extends pg.QueryResultRow = pg.QueryResultRow>(db: pg.Pool | pg.PoolClient, text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
  try {
    return await db.query<R>(text, values);
  } catch (err) {
    throw classifyPgError(err);
  }
}

/** A client of its own from the pool; failing to connect comes out classified as query's errors do. */
export async function connect(pool: pg.Pool): Promise<pg.PoolClient> {
  try {
    return await pool.connect();
  } catch (err) {
    throw classifyPgError(err);
  }
}

/**
 * A statement built elsewhere (kysely's builder or its `sql` template, outside the hot path), its failure classified
 * as query's are: `await classified(sql\`SELECT … FROM masq.f(${x})\`.execute(masqQueries(db)))`.
 */
export async function classified<T>(statement: Promise<T>, target?: PgTarget): Promise<T> {
  try {
    return await statement;
  } catch (err) {
    throw classifyPgError(err, target);
  }
}

const TRANSIENT_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "ENOTFOUND"]);
const TRANSIENT_SQLSTATES = new Set(["40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"]);
/** TLS failures of certificate checking: the same certificate fails the same way on every try. */
const TLS_CODES = /^(SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|CERT_HAS_EXPIRED|CERT_NOT_YET_VALID|ERR_TLS_CERT_ALTNAME_INVALID|ERR_SSL_.*)$/;

const DEFAULT_TARGET: PgTarget = { setting: "DATABASE_URL", where: "the server it names" };

/**
 * Maps whatever pg threw onto masq's error classes (see errors.ts). SQLSTATE classes:
 * 08 connection, 53 resources, 57P0x shutdown, 40 serialization/deadlock → transient;
 * 22 data exception, 23 integrity violation → the rows are bad; anything else with a SQLSTATE → fatal.
 * Mistakes in the connection settings (a wrong password, an unknown database or role, a role that may not log in,
 * TLS the server does not offer, a certificate file that cannot be read, an invalid server option) are
 * configuration errors naming the setting: no retry can fix them.
 * A RangeError was raised on masq's side while encoding the statement (a string past V8's limit, say): nothing
 * reached Postgres and retrying cannot help, so it is a DataError: the batch is split and the offender quarantined.
 * Other errors with no SQLSTATE come from the socket or the driver and are treated as transient.
 * Messages are pg's own text (no row values: the DETAIL field, which can hold them, is never used).
 */
export function classifyPgError(err: unknown, target: PgTarget = DEFAULT_TARGET): TransientError | DataError | FatalError | ConfigError {
  if (err instanceof TransientError || err instanceof DataError || err instanceof FatalError || err instanceof ConfigError) return err;
  if (isEncodingError(err)) return new DataError(`masq could not encode the statement for Postgres (${err.message})`, "statement_encoding");
  const e = err as { code?: unknown; message?: unknown; syscall?: unknown; path?: unknown };
  const code = typeof e.code === "string" ? e.code : "";
  const message = typeof e.message === "string" ? e.message : String(err);
  const mistake = connectionMistake(code, message, e.syscall, target);
  if (mistake !== undefined) return mistake;
  if (/^[0-9A-Z]{5}$/.test(code)) {
    if (code === "55P03" || code === "57014") return timedOut(code, message);
    if (code.startsWith("08") || code.startsWith("53") || TRANSIENT_SQLSTATES.has(code)) {
      return new TransientError(`Postgres: ${message} (SQLSTATE ${code})`, `pg_${code}`, { what: "Postgres is not available", object: targetText(target), hint: message });
    }
    if (code === "55000" && message.startsWith("a pseudonym key rotation is in progress")) {
      // Raised by the erase and prune functions (104_lifecycle.sql, masq.refuse_during_rotation).
      return new FatalError(`Postgres: ${message} (SQLSTATE ${code})`, {
        what: "a pseudonym key rotation is in progress",
        object: "masq.pseudonym_rotation",
        hint: "finish it first with masq rotate pseudonym-key --resume (as the schema owner), then run this again",
      });
    }
    if (code.startsWith("22") || code.startsWith("23")) return new DataError(`Postgres rejected the rows: ${message} (SQLSTATE ${code})`, code);
    if (code === "42501") {
      return new FatalError(`Postgres: ${message} (SQLSTATE ${code})`, {
        what: `Postgres refused: ${message}`,
        object: targetText(target),
        hint: "the login lacks a privilege masq needs; SECURITY.md lists the grants per role (masq check shows which one is missing)",
      });
    }
    return new FatalError(`Postgres: ${message} (SQLSTATE ${code})`);
  }
  const cause = TRANSIENT_CODES.has(code) ? code.toLowerCase() : "pg_connection";
  return new TransientError(`Postgres unreachable: ${message}${code ? ` (${code})` : ""}`, cause, {
    what: "cannot reach Postgres",
    object: targetText(target),
    hint: `${message}${code && !message.includes(code) ? ` (${code})` : ""}`,
  });
}

/**
 * lock_not_available (a lock_timeout ran out) and query_canceled (a statement_timeout, or a cancel request): the
 * server is there, a wait was too long. Transient (the holder may let go), and never told as an outage: the caller
 * that knows what it waited for names the session holding it (lock-watch.ts).
 */
function timedOut(code: string, message: string): TransientError {
  const lock = code === "55P03";
  return new TransientError(`Postgres: ${message} (SQLSTATE ${code})`, `pg_${code}`, {
    what: lock ? "a lock masq waits for is held by another session" : "a statement ran past its time limit",
    object: lock ? "pg_locks" : "statement_timeout",
    hint: lock
      ? `${message}; pg_stat_activity and pg_blocking_pids() show which session holds it (SECURITY.md, "Waits")`
      : `${message}; a lock held by another session is the usual cause (SECURITY.md, "Waits")`,
  });
}

function connectionMistake(code: string, message: string, syscall: unknown, target: PgTarget): ConfigError | undefined {
  const fix = (problem: string, hint: string) => new ConfigError(target.setting, problem, { what: "Postgres refused the connection", object: targetText(target), hint });
  switch (code) {
    case "28P01":
      return fix(message, "check the password in the URL (or PGPASSWORD)");
    case "28000":
      return fix(message, /does not exist/.test(message) ? "check the user name in the URL, or create the role" : /not permitted to log in/.test(message) ? "ALTER ROLE … LOGIN, or use a login role that is granted it" : "check the user, host and sslmode against the server's pg_hba.conf");
    case "3D000":
      return fix(message, "check the database name in the URL, or create it");
    case "42704":
    case "22023":
      // Raised at connection start by a server parameter given in the URL (options=-c name=value).
      if (/parameter/.test(message)) return fix(message, "fix the options parameter of the URL");
      return undefined;
  }
  if (/does not support SSL/i.test(message)) return fix("the server does not offer TLS, but sslmode asks for it", "enable ssl on the server, or set sslmode=disable in the URL");
  if (TLS_CODES.test(code)) return fix(`the server's TLS certificate is not accepted: ${message}`, "set sslrootcert to the CA that signed it, or check the host name");
  if ((code === "ENOENT" || code === "EACCES" || code === "EISDIR") && syscall === "open") {
    return fix(`a certificate or key file named in the URL cannot be read (${code})`, "check sslrootcert, sslcert and sslkey");
  }
  if (/SASL|password must be a string|no password/i.test(message)) return fix(`the server asks for a password: ${message}`, "put the password in the URL or PGPASSWORD");
  return undefined;
}

/**
 * For a command's catch-all: errors that came from Postgres or its connection get masq's words; anything else
 * (an integrity failure, a bug) passes unchanged rather than being mistaken for an outage.
 */
export function fromPostgres(err: unknown, target: PgTarget): unknown {
  const e = err as { severity?: unknown; code?: unknown; syscall?: unknown; message?: unknown } | null;
  if (e === null || typeof e !== "object") return err;
  const fromPg =
    typeof e.severity === "string" ||
    typeof e.syscall === "string" ||
    (typeof e.code === "string" && TLS_CODES.test(e.code)) ||
    (typeof e.message === "string" && /^(Connection terminated|timeout exceeded when trying to connect|The server does not support SSL)/.test(e.message));
  return fromPg ? classifyPgError(err, target) : err;
}

/**
 * An error raised while building or encoding a statement, before anything is sent: node-postgres lets V8's
 * RangeError ("Invalid string length", "Invalid array length") out of its value encoding. It says nothing about
 * Postgres, whose reachability it must not be mistaken for.
 */
export function isEncodingError(err: unknown): err is RangeError {
  return err instanceof RangeError;
}
