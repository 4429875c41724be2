/**
 * The operational HTTP listener of `masq run` (/metrics, /healthz, /readyz) and the readiness probe behind /readyz.
 * Loaded only when MASQ_HTTP_PORT asks for a listener.
 */
import type pg from "pg";
import { createServer, type Server } from "node:http";
import { loadMigrations } from "../db/migrate.ts";
import { targetText, type PgTarget } from "../db/connection.ts";
import { fromPostgres } from "../db/query.ts";
import { ConfigError, describeError, errorLine } from "../errors.ts";
import type { QueueSource } from "../ingest/sqs-source.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "./metrics.ts";

/**
 * The operational HTTP listener: /metrics (Prometheus text format), /healthz (the process is alive and its event
 * loop answers) and /readyz (SQS and Postgres reachable, migrations applied; 503 otherwise, with the failing check).
 */
export async function startHttpServer(opts: {
  port: number;
  host?: string;
  metrics: Metrics;
  readiness: () => Promise<Readiness>;
  logger: Logger;
}): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send(405, "text/plain", "method not allowed\n");
    switch (path) {
      case "/metrics":
        opts.metrics.registry.metrics().then(
          (text) => send(200, opts.metrics.registry.contentType, text),
          (err: unknown) => send(500, "text/plain", `${String(err)}\n`),
        );
        return;
      case "/healthz":
        return send(200, "application/json", '{"status":"ok"}\n');
      case "/readyz":
        opts.readiness().then(
          (r) => send(r.ready ? 200 : 503, "application/json", `${JSON.stringify(r)}\n`),
          (err: unknown) => send(503, "application/json", `${JSON.stringify({ ready: false, error: String(err) })}\n`),
        );
        return;
      default:
        return send(404, "text/plain", "not found: try /metrics, /healthz or /readyz\n");
    }
  });
  // Probes must not keep a shutting-down process alive.
  server.keepAliveTimeout = 5_000;
  const host = opts.host ?? "0.0.0.0";
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(listenError(err, opts.port, host)));
    server.listen(opts.port, host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr !== null ? addr.port : opts.port;
  opts.logger.info({ port }, "HTTP listener for /metrics, /healthz and /readyz");
  return {
    server,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A listener that cannot start is a setting to change: name it (the port in use, the address that is not ours). */
function listenError(err: Error, port: number, host: string): Error {
  const code = (err as NodeJS.ErrnoException).code;
  const what = "cannot start the HTTP listener for /metrics, /healthz and /readyz";
  if (code === "EADDRINUSE") return new ConfigError("MASQ_HTTP_PORT", `port ${port} on ${host} is in use by another program`, { what, hint: 'choose another port with MASQ_HTTP_PORT or --http-port, 0 for any free one, or "off"' });
  if (code === "EACCES") return new ConfigError("MASQ_HTTP_PORT", `port ${port} needs privileges this process lacks`, { what, hint: "choose a port above 1023 with MASQ_HTTP_PORT or --http-port" });
  if (code === "ENOTFOUND" || code === "EAI_AGAIN" || code === "EADDRNOTAVAIL" || code === "EAFNOSUPPORT") {
    return new ConfigError("MASQ_HTTP_HOST", `${host} is not an address of this machine (${code})`, { what, hint: "use 0.0.0.0 (every address), 127.0.0.1, or an address this host has, with MASQ_HTTP_HOST or --http-host" });
  }
  return err;
}

export interface Check {
  ok: boolean;
  detail?: string;
}

export interface Readiness {
  ready: boolean;
  checks: { postgres: Check; migrations: Check; sqs: Check };
}

/**
 * Ready means: Postgres answers, its schema is at the migration this masq ships, and SQS answers for the queue.
 * Results are cached briefly so a probe every second costs one round trip every few seconds, not one per probe.
 */
export function readinessProbe(opts: {
  pool: pg.Pool;
  /** Undefined until masq knows the endpoint's protocol (run.ts); sqsNotReady says what it is waiting for then. */
  source: () => QueueSource | undefined;
  sqsNotReady?: () => string;
  cacheMs?: number;
  /** Named in a failing check's detail, so the probe says which setting to look at. */
  targets?: { postgres: PgTarget; sqs: string };
}): () => Promise<Readiness> {
  const expected = loadMigrations().at(-1)?.version ?? 0;
  const cacheMs = opts.cacheMs ?? 5_000;
  let cached: { at: number; value: Promise<Readiness> } | undefined;

  const check = async (): Promise<Readiness> => {
    const timeout = AbortSignal.timeout(4_000);
    const [postgres, migrations] = await (async (): Promise<[Check, Check]> => {
      try {
        // A pool waiting for a connection to a dead server would outlast the probe: bound it. On pg, not kysely: `masq
        // run` loads this file before it serves /readyz, and kysely (about 0.2 s) would hold that up.
        const { rows } = await Promise.race([
          opts.pool.query<{ v: number | null }>("SELECT (SELECT max(version) FROM masq.schema_migrations) AS v"),
          new Promise<never>((_, reject) => timeout.addEventListener("abort", () => reject(new Error("Postgres did not answer within 4 s")))),
        ]);
        const v = rows[0]?.v ?? 0;
        return [{ ok: true }, v === expected ? { ok: true } : { ok: false, detail: `schema at migration ${v}, this masq needs ${expected}` }];
      } catch (err) {
        // An undefined table means Postgres is up but masq's schema is not: report that as the migrations check.
        if ((err as { code?: string }).code === "42P01") return [{ ok: true }, { ok: false, detail: "migrations not applied" }];
        const known = opts.targets ? fromPostgres(err, opts.targets.postgres) : err;
        const e = known === err ? describeError(err) : errorLine(known).replace(/^masq: /, "");
        const where = opts.targets ? ` (${targetText(opts.targets.postgres)})` : "";
        return [{ ok: false, detail: e.includes(where) ? e : `${e}${where}` }, { ok: false, detail: "unknown: Postgres unreachable" }];
      }
    })();
    let sqs: Check;
    const source = opts.source();
    if (source === undefined) sqs = { ok: false, detail: opts.sqsNotReady?.() ?? "not connected yet" };
    else {
      try {
        await source.counts(timeout);
        sqs = { ok: true };
      } catch (err) {
        sqs = { ok: false, detail: `${describeError(err)}${opts.targets ? ` (${opts.targets.sqs})` : ""}` };
      }
    }
    return { ready: postgres.ok && migrations.ok && sqs.ok, checks: { postgres, migrations, sqs } };
  };

  return () => {
    const now = Date.now();
    if (cached === undefined || now - cached.at > cacheMs) cached = { at: now, value: check() };
    return cached.value;
  };
}
