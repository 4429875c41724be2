import type pg from "pg";
import { classifyPgError } from "../sink/pg-errors.ts";

/**
 * The one way masq's own code talks to Postgres outside the hot path: a query whose failure comes out as masq's
 * error classes (transient, data, fatal, configuration; sink/pg-errors.ts), classified here where the call is made.
 */
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
export async function classified<T>(statement: Promise<T>): Promise<T> {
  try {
    return await statement;
  } catch (err) {
    throw classifyPgError(err);
  }
}
