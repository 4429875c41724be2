import { after, before } from "node:test";
import { prepareDatabase } from "../../src/db/prepare-database.ts";
import { createLogger } from "../../src/log.ts";
import { createDb, type Db } from "../../src/db/pool.ts";
import { TABLE } from "./pipeline.ts";
import { createTestDatabase, type TestDatabase } from "./postgres.ts";
import { startMoto, type Moto } from "./moto.ts";
import { startTestSqs, type TestSqs } from "./sqs.ts";

export interface PipelineFixture {
  pgdb: TestDatabase;
  sqs: TestSqs;
  /** A pool on the test database; a test that restarts the server may replace it. */
  db: Db;
  /** Empties the target table, the ledger and the quarantine between tests. */
  reset(): Promise<void>;
}

/**
 * The usual integration-test setup, registered as before/after hooks of the calling file: a fresh database on real
 * Postgres (migrated, with the target table), an in-process fauxqs, and a pool. Fields are set once `before` ran.
 */
export function usePipelineFixture(): PipelineFixture {
  const f = {
    async reset() {
      await f.db.pool.query("TRUNCATE public.user_logins, masq.ingest_ledger, masq.quarantine, masq.vault");
    },
  } as PipelineFixture;
  before(async () => {
    const [pgdb, sqs] = await Promise.allSettled([createTestDatabase(), startTestSqs()]);
    if (pgdb.status === "fulfilled") f.pgdb = pgdb.value;
    if (sqs.status === "fulfilled") f.sqs = sqs.value;
    throwFirstRejection(pgdb, sqs);
    f.db = createDb({ databaseUrl: f.pgdb.url });
    await prepareDatabase(f.db, TABLE, { migrate: true, logger: createLogger("silent") });
  });
  // Whatever `before` started is stopped, even when it failed half-way: a server left listening keeps the test
  // file's process alive for ever (seen: an embedded Postgres that did not start left fauxqs up, and the run hung).
  after(() => closeAll([f.db?.close.bind(f.db), f.sqs?.close.bind(f.sqs), f.pgdb?.close.bind(f.pgdb)]));
  return f;
}

export interface MotoFixture {
  moto: Moto;
  pgdb: TestDatabase;
  db: Db;
}

/**
 * For tests against moto's server (KMS, STS, SQS over the Query protocol): moto started on a free port and a fresh
 * migrated database, registered as before/after hooks; nothing starts when `skip` is set (no moto here).
 */
export function useMotoFixture(skip: string | false): MotoFixture {
  const f = {} as MotoFixture;
  before(async () => {
    if (skip) return;
    const [moto, pgdb] = await Promise.allSettled([startMoto(), createTestDatabase()]);
    if (moto.status === "fulfilled") f.moto = moto.value;
    if (pgdb.status === "fulfilled") f.pgdb = pgdb.value;
    throwFirstRejection(moto, pgdb);
    f.db = createDb({ databaseUrl: f.pgdb.url });
    await prepareDatabase(f.db, TABLE, { migrate: true, logger: createLogger("silent") });
  });
  after(async () => {
    if (skip) return;
    await closeAll([f.db?.close.bind(f.db), f.pgdb?.close.bind(f.pgdb), f.moto?.stop.bind(f.moto)]);
  });
  return f;
}

export function throwFirstRejection(...results: PromiseSettledResult<unknown>[]): void {
  for (const r of results) if (r.status === "rejected") throw r.reason;
}

/** Runs every close that exists, in order, even when one fails; then throws the first failure. */
export async function closeAll(closes: (((...a: never[]) => Promise<unknown>) | undefined)[]): Promise<void> {
  let first: unknown;
  for (const close of closes) {
    if (close === undefined) continue;
    try {
      await close();
    } catch (err) {
      first ??= err;
    }
  }
  if (first !== undefined) throw first instanceof Error ? first : new Error("a fixture failed to close", { cause: first });
}
