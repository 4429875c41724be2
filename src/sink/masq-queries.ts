import { Kysely, PostgresDialect } from "kysely";
import type { Database } from "../db/schema.ts";
import type { Db } from "./db.ts";

const builders = new WeakMap<Db, Kysely<Database>>();

/**
 * Typed queries on masq's own tables (status, quarantine, the demo's summary), on the pool of `db`. Kysely is loaded
 * only by the commands that use it: importing it costs about 0.2 s, which `run` would pay at every start for nothing.
 * The pool stays db's: db.close() ends it, and the builder is never destroyed on its own.
 */
export function masqQueries(db: Db): Kysely<Database> {
  let k = builders.get(db);
  if (k === undefined) {
    k = new Kysely<Database>({ dialect: new PostgresDialect({ pool: db.pool }) });
    builders.set(db, k);
  }
  return k;
}
