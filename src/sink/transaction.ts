import type pg from "pg";
import { classifyPgError } from "./pg-errors.ts";

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
