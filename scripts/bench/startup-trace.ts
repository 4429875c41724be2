/**
 * A preload (`NODE_OPTIONS=--import=scripts/bench/startup-trace.ts`) that writes where a masq process's start-up time
 * goes, on stderr at exit, one `masq-trace <ms since the process started> <main thread's CPU ms> <what>` line per event:
 *   - masq's own `performance.mark("masq:…")` steps (src/commands/run.ts, bin/masq);
 *   - each npm package's first module loaded, and each of masq's own folders' first file;
 *   - each HTTP request's start and its response's end (SQS, with its operation), each TCP connect (Postgres).
 * For measurement only (scripts/bench/first-receive.ts --trace); masq itself writes nothing of this.
 */
import { subscribe } from "node:diagnostics_channel";
import { registerHooks } from "node:module";
import process from "node:process";

// [ms since the process started, this thread's CPU ms so far, what]: the CPU column tells work from waiting (for
// the network, or for a core the machine's other work holds).
const events: [number, number, string][] = [];
const cpuMs = () => {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1000;
};
const note = (what: string) => events.push([performance.now(), cpuMs(), what]);
const mark = performance.mark.bind(performance);
performance.mark = (name: string, opts?: Parameters<typeof performance.mark>[1]) => {
  note(`mark ${name}`);
  return mark(name, opts);
};
const seen = new Set<string>();

registerHooks({
  resolve(spec, ctx, next) {
    const r = next(spec, ctx);
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(r.url) ?? /\/(src\/[^/]+|bin\/[^/]+)/.exec(r.url);
    if (m && !seen.has(m[1]!)) {
      seen.add(m[1]!);
      note(`load ${m[1]}`);
    }
    return r;
  },
});

/** The SQS operation (JSON protocol's header), else the path. */
const operation = (msg: unknown): string => {
  const req = (msg as { request: { getHeader(name: string): unknown; path: string } }).request;
  const target = req.getHeader("x-amz-target");
  return typeof target === "string" ? target : req.path;
};
subscribe("http.client.request.start", (msg) => note(`http start ${operation(msg)}`));
subscribe("http.client.response.finish", (msg) => note(`http done ${operation(msg)}`));
subscribe("net.client.socket", (msg) => {
  const s = msg as { socket: { once(e: string, f: () => void): void; remotePort?: number } };
  note("tcp connect start");
  s.socket.once("connect", () => note(`tcp connected ${s.socket.remotePort ?? ""}`));
});

// STARTUP_TRACE_PG=1: each Postgres query's text and time too (loads pg before masq does, which moves its load).
if (process.env.STARTUP_TRACE_PG === "1") {
  const { createRequire } = await import("node:module");
  const pg = createRequire(process.argv[1]!)("pg") as { Client: { prototype: { query: (...a: unknown[]) => unknown } } };
  const query = pg.Client.prototype.query;
  pg.Client.prototype.query = function (this: unknown, ...args: unknown[]) {
    const text = String(typeof args[0] === "string" ? args[0] : (args[0] as { text?: string }).text).replace(/\s+/g, " ").slice(0, 70);
    const started = performance.now();
    const done = () => note(`pg ${(performance.now() - started).toFixed(1)} ms ${text}`);
    const last = args.at(-1);
    if (typeof last === "function") {
      args[args.length - 1] = (...cbArgs: unknown[]) => {
        done();
        return (last as (...a: unknown[]) => unknown)(...cbArgs);
      };
    }
    const r = query.apply(this, args);
    if (r instanceof Promise) void r.finally(done).catch(() => undefined);
    return r;
  };
}

process.on("exit", () => {
  events.sort((a, b) => a[0] - b[0]);
  process.stderr.write(events.map(([t, c, w]) => `masq-trace ${t.toFixed(1).padStart(7)} ${c.toFixed(1).padStart(7)} ${w}\n`).join(""));
});
