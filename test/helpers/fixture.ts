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
    [f.pgdb, f.sqs] = await Promise.all([createTestDatabase(), startTestSqs()]);
    f.db = createDb({ databaseUrl: f.pgdb.url });
    await prepareDatabase(f.db, TABLE, { migrate: true, logger: createLogger("silent") });
  });
  after(async () => {
    await f.db.close();
    await f.sqs.close();
    await f.pgdb.close();
  });
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
    [f.moto, f.pgdb] = await Promise.all([startMoto(), createTestDatabase()]);
    f.db = createDb({ databaseUrl: f.pgdb.url });
    await prepareDatabase(f.db, TABLE, { migrate: true, logger: createLogger("silent") });
  });
  after(async () => {
    if (skip) return;
    await f.db.close();
    await f.pgdb.close();
    await f.moto.stop();
  });
  return f;
}
