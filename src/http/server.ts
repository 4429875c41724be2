import { createServer, type Server } from "node:http";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { Readiness } from "./readiness.ts";

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
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host ?? "0.0.0.0", () => resolve());
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
