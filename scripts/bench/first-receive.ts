/**
 * Spawn to first receive of `bin/masq run --drain`, as a user runs it (no Node options, no HTTP listener, the local
 * key provider): masq's requests pass through a small HTTP proxy in this process, which notes when the first
 * ReceiveMessage arrives. Each checkout's bin/masq runs `--repeat` times, interleaved, against one fauxqs (its own
 * process) and a fresh database of DATABASE_URL (else an embedded Postgres); the first run of each is a warm-up
 * (migrations, the compile cache) and does not count.
 *
 *   node scripts/bench/first-receive.ts [--repeat 7] [--messages 0] [--masq-bin path/bin/masq ...] [--trace]
 *     [--show-trace] [--env MASQ_PREPARE_THREADS=0 ...] [--node-options="--cpu-prof --cpu-prof-dir=/tmp/prof"]
 *
 * --trace preloads startup-trace.ts into masq: its start-up steps, packages loaded, HTTP requests and TCP connects,
 * with their times since the process started, printed here.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer, request, type IncomingMessage } from "node:http";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { startEmbeddedPostgres, freePort } from "../../src/ops/demo.ts";
import { startFauxqsProcess } from "../../src/ops/fauxqs.ts";
import { BENCH_CREDENTIALS } from "./environment.ts";
import { createQueue, fillQueue } from "./fill-queue.ts";
import { createSqsClient } from "../../src/ingest/sqs-client.ts";

const { values: v } = parseArgs({
  options: {
    repeat: { type: "string", default: "7" },
    messages: { type: "string", default: "0" },
    "masq-bin": { type: "string", multiple: true },
    trace: { type: "boolean", default: false },
    "show-trace": { type: "boolean", default: false },
    "node-options": { type: "string" },
    env: { type: "string", multiple: true },
  },
});
const repeat = Number(v.repeat);
const messages = Number(v.messages);
const bins = v["masq-bin"]?.length ? v["masq-bin"] : [fileURLToPath(new URL("../../bin/masq", import.meta.url))];

const external = process.env.DATABASE_URL;
const embedded = external ? undefined : await startEmbeddedPostgres();
const adminUrl = external || embedded!.url;
const dbName = `masq_first_receive_${randomBytes(4).toString("hex")}`;
const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
await admin.query(`CREATE DATABASE ${dbName}`);
const url = new URL(adminUrl);
url.pathname = `/${dbName}`;
const sqs = await startFauxqsProcess(await freePort());
const client = createSqsClient({ region: "us-east-1", endpoint: sqs.endpoint, credentials: BENCH_CREDENTIALS, maxSockets: 16, requestTimeoutMs: 16_000 });

// The proxy: every request to fauxqs passes; the first ReceiveMessage of the current run is timed.
let firstReceive: number | undefined;
const isReceive = (req: IncomingMessage, body: string) => req.headers["x-amz-target"] === "AmazonSQS.ReceiveMessage" || body.includes("Action=ReceiveMessage");
const proxy = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    if (firstReceive === undefined && isReceive(req, body.toString())) firstReceive = performance.now();
    const up = request({ host: "127.0.0.1", port: sqs.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.destroy());
    up.end(body);
  });
});
await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
const proxyPort = (proxy.address() as { port: number }).port;
const endpoint = `http://127.0.0.1:${proxyPort}`;

interface Run {
  firstReceiveMs: number;
  exitMs: number;
  /** With --trace: the main thread's CPU time when it sent its first ReceiveMessage. */
  firstReceiveCpuMs: number | undefined;
  trace: string[];
}

async function runOnce(bin: string): Promise<Run> {
  const queueUrl = messages > 0 ? (await fillQueue(client, "first-receive", Array.from({ length: messages }, () => "{}"))).queueUrl : await createQueue(client, "first-receive");
  firstReceive = undefined;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    QUEUE_URL: queueUrl.replace(/^http:\/\/[^/]+/, endpoint),
    AWS_ENDPOINT_URL_SQS: endpoint,
    AWS_ACCESS_KEY_ID: BENCH_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: BENCH_CREDENTIALS.secretAccessKey,
    AWS_REGION: "us-east-1",
    DATABASE_URL: url.toString(),
    MASQ_MASTER_KEY: "11".repeat(32),
    ...Object.fromEntries((v.env ?? []).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)])),
    ...(process.env.STARTUP_TRACE_PG ? { STARTUP_TRACE_PG: process.env.STARTUP_TRACE_PG } : {}),
    NODE_OPTIONS: [v.trace ? `--import=${fileURLToPath(new URL("./startup-trace.ts", import.meta.url))}` : "", v["node-options"] ?? ""].join(" ").trim(),
  };
  const spawned = performance.now();
  const child = spawn(process.execPath, [bin, "run", "--drain"], { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (out += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  const exited = performance.now();
  if (code !== 0 || firstReceive === undefined) throw new Error(`${bin} exited ${code}:\n${out}`);
  const trace = out.split("\n").filter((l) => l.startsWith("masq-trace"));
  const cpu = trace.find((l) => l.endsWith("http start AmazonSQS.ReceiveMessage"))?.split(/\s+/)[2];
  return { firstReceiveMs: firstReceive - spawned, exitMs: exited - spawned, firstReceiveCpuMs: cpu === undefined ? undefined : Number(cpu), trace };
}

const results = new Map<string, Run[]>(bins.map((b) => [b, []]));
for (const bin of bins) await runOnce(bin); // warm-up: migrations, compile cache
for (let i = 0; i < repeat; i++) {
  for (const bin of bins) {
    const r = await runOnce(bin);
    results.get(bin)!.push(r);
    process.stderr.write(`${bin}: first receive ${r.firstReceiveMs.toFixed(0)} ms${r.firstReceiveCpuMs === undefined ? "" : ` (main thread CPU ${r.firstReceiveCpuMs} ms)`}, exit ${r.exitMs.toFixed(0)} ms\n`);
    if (v.trace && v["show-trace"]) process.stderr.write(`${r.trace.join("\n")}\n`);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
for (const [bin, runs] of results) {
  const fr = runs.map((r) => r.firstReceiveMs);
  const ex = runs.map((r) => r.exitMs);
  const cpu = runs.flatMap((r) => (r.firstReceiveCpuMs === undefined ? [] : [r.firstReceiveCpuMs]));
  process.stdout.write(
    `${bin}: spawn → first ReceiveMessage median ${median(fr).toFixed(0)} ms (min ${Math.min(...fr).toFixed(0)}, max ${Math.max(...fr).toFixed(0)}); spawn → exit median ${median(ex).toFixed(0)} ms (min ${Math.min(...ex).toFixed(0)})${cpu.length ? `; main thread CPU to first receive median ${median(cpu).toFixed(0)} ms (min ${Math.min(...cpu).toFixed(0)})` : ""}; N=${runs.length}\n`,
  );
}

// With --trace: the median time and main-thread CPU at each step's first occurrence, over the counted runs.
if (v.trace) {
  const STEPS: [string, RegExp][] = [
    ["bin/masq starts", /load bin\/masq$/],
    ["src/cli.ts loaded (commander next)", /load src\/cli\.ts$/],
    ["run's modules start loading", /load src\/commands$/],
    ["pg loaded (its last dependency, xtend)", /load xtend$/],
    ["runCommand starts (this change's mark)", /mark masq:run$/],
    ["SQS probe sent", /http start AmazonSQS\.GetQueueAttributes$/],
    ["SQS probe answered", /http done AmazonSQS\.GetQueueAttributes$/],
    ["Postgres prepared", /mark masq:database$/],
    ["keys open", /mark masq:keys$/],
    ["runner starts", /mark masq:runner$/],
    ["first ReceiveMessage sent", /http start AmazonSQS\.ReceiveMessage$/],
  ];
  for (const [bin, runs] of results) {
    process.stdout.write(`${bin}: step (first occurrence)   ms since spawn of the process   main thread CPU ms   (medians)\n`);
    for (const [name, re] of STEPS) {
      const hits = runs.flatMap((r) => {
        const line = r.trace.find((l) => re.test(l));
        return line === undefined ? [] : [line.split(/\s+/).slice(1, 3).map(Number) as [number, number]];
      });
      if (hits.length === 0) continue;
      process.stdout.write(`  ${name.padEnd(40)} ${median(hits.map((h) => h[0])).toFixed(0).padStart(6)} ${median(hits.map((h) => h[1])).toFixed(0).padStart(6)}\n`);
    }
  }
}

client.destroy();
proxy.close();
await sqs.kill();
await admin.query(`DROP DATABASE ${dbName} WITH (FORCE)`);
await admin.end();
await embedded?.stop();
