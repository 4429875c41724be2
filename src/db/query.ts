import type pg from "pg";
import { classifyPgError } from "../sink/pg-errors.ts";

/** A query whose errors come out as masq's error classes (transient, data, fatal). */
export async function query<R extends pg.QueryResultRow = pg.QueryResultRow>(db: pg.Pool | pg.PoolClient, text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
  try {
    return await db.query<R>(text, values);
  } catch (err) {
    throw classifyPgError(err);
  }
}
