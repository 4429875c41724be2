import { DataError, FatalError, TransientError } from "../errors.ts";

const TRANSIENT_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "ENOTFOUND"]);
const TRANSIENT_SQLSTATES = new Set(["40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"]);

/**
 * Maps whatever pg threw onto masq's error classes (see errors.ts). SQLSTATE classes:
 * 08 connection, 53 resources, 57P0x shutdown, 40 serialization/deadlock → transient;
 * 22 data exception, 23 integrity violation → the rows are bad; anything else with a SQLSTATE → fatal.
 * A RangeError was raised on masq's side while encoding the statement (a string past V8's limit, say): nothing
 * reached Postgres and retrying cannot help, so it is a DataError: the batch is split and the offender quarantined.
 * Other errors with no SQLSTATE come from the socket or the driver and are treated as transient.
 * Messages are pg's own text (no row values: the DETAIL field, which can hold them, is never used).
 */
export function classifyPgError(err: unknown): TransientError | DataError | FatalError {
  if (err instanceof TransientError || err instanceof DataError || err instanceof FatalError) return err;
  if (isEncodingError(err)) return new DataError(`masq could not encode the statement for Postgres (${err.message})`, "statement_encoding");
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e.code === "string" ? e.code : "";
  const message = typeof e.message === "string" ? e.message : String(err);
  if (/^[0-9A-Z]{5}$/.test(code)) {
    if (code.startsWith("08") || code.startsWith("53") || TRANSIENT_SQLSTATES.has(code)) {
      return new TransientError(`Postgres: ${message} (SQLSTATE ${code})`, `pg_${code}`);
    }
    if (code.startsWith("22") || code.startsWith("23")) return new DataError(`Postgres rejected the rows: ${message} (SQLSTATE ${code})`, code);
    return new FatalError(`Postgres: ${message} (SQLSTATE ${code})`);
  }
  const cause = TRANSIENT_CODES.has(code) ? code.toLowerCase() : "pg_connection";
  return new TransientError(`Postgres unreachable: ${message}${code ? ` (${code})` : ""}`, cause);
}

/**
 * An error raised while building or encoding a statement, before anything is sent: node-postgres lets V8's
 * RangeError ("Invalid string length", "Invalid array length") out of its value encoding. It says nothing about
 * Postgres, whose reachability it must not be mistaken for.
 */
export function isEncodingError(err: unknown): err is RangeError {
  return err instanceof RangeError;
}
