import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { SQSClient } from "@aws-sdk/client-sqs";
import pg from "pg";
import { prepareDatabase } from "../../src/db/prepare-database.ts";
import { freePort, startEmbeddedPostgres, type EmbeddedPg } from "../../src/ops/demo.ts";
import { startFauxqsProcess, type FauxqsProcess } from "../../src/ops/fauxqs.ts";
import { createLogger } from "../../src/log.ts";
import { createDb, type Db } from "../../src/db/pool.ts";
import type { TableName } from "../../src/db/tables.ts";
import { createSqsClient } from "../../src/ingest/sqs-client.ts";

export const TABLE: TableName = { schema: "public", name: "user_logins" };
/** fauxqs accepts any credentials; these keep the SDK from looking for real ones. */
export const BENCH_CREDENTIALS = { accessKeyId: "bench", secretAccessKey: "bench" };

/** The servers one benchmark run uses: Postgres (a fresh database) and fauxqs in its own process. */
export interface BenchEnv {
  databaseUrl: string;
  /** "embedded" or the host:port of DATABASE_URL (never its password). */
  postgres: string;
  postgresVersion: string;
  db: Db;
  sqs: FauxqsProcess;
  /** Empties the user's table and masq's tables, so that every phase starts from the same state. */
  reset(): Promise<void>;
  /** An SQS client configured as masq configures its own (same agent, sockets and timeouts). */
  sqsClient(endpoint: string, receivers: number): SQSClient;
  close(): Promise<void>;
}

const O1_DEQUEUE = fileURLToPath(new URL("./fauxqs-o1-dequeue.ts", import.meta.url));

/** fauxqsAsIs: leave fauxqs's O(backlog) dequeue alone (see fauxqs-o1-dequeue.ts). */
export async function startBenchEnv(opts: { fauxqsAsIs?: boolean } = {}): Promise<BenchEnv> {
  const external = process.env.DATABASE_URL;
  let embedded: EmbeddedPg | undefined;
  if (external === undefined || external === "") embedded = await startEmbeddedPostgres();
  const adminUrl = external || embedded!.url;
  const name = `masq_bench_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const databaseUrl = url.toString();

  const db = createDb({ databaseUrl, poolSize: 8 });
  await prepareDatabase(db, TABLE, { migrate: true, logger: createLogger("silent") });
  const version = (await db.pool.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v;
  const sqs = await startFauxqsProcess(await freePort(), undefined, opts.fauxqsAsIs ? [] : ["--import", O1_DEQUEUE]);

  return {
    databaseUrl,
    postgres: embedded ? "embedded" : `${url.hostname}:${url.port || 5432}`,
    postgresVersion: version,
    db,
    sqs,
    reset: async () => {
      await db.pool.query("TRUNCATE public.user_logins, masq.ingest_ledger, masq.quarantine, masq.vault");
      // Fresh statistics and no dead tuples left behind by the previous phase.
      await db.pool.query("VACUUM ANALYZE public.user_logins, masq.ingest_ledger, masq.quarantine");
    },
    sqsClient: (endpoint, receivers) =>
      createSqsClient({ region: "us-east-1", endpoint, credentials: BENCH_CREDENTIALS, maxSockets: receivers + 32, requestTimeoutMs: 16_000 }),
    async close() {
      // The fauxqs child is unref'd: with the pool's connections idle-closed (a long phase that did not use them),
      // nothing else would keep the event loop alive until its exit event, and the run would end unsettled.
      const keepAlive = setInterval(() => undefined, 1000);
      try {
        await sqs.kill();
      } finally {
        clearInterval(keepAlive);
      }
      await db.close();
      if (embedded) {
        await embedded.stop();
        return;
      }
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}
