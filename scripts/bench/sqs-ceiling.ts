import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The calls the ceiling's loop makes: SqsSource (the SDK, as masq) or WireSource (the wire floor). */
export interface CeilingSource {
  counts(): Promise<unknown>;
  receiveBatch(opts: { waitTimeSeconds: number; visibilityTimeoutSeconds: number; signal?: AbortSignal }): Promise<readonly { messageId: string; receiptHandle: string }[]>;
  deleteBatch(messages: readonly { messageId: string; receiptHandle: string }[]): Promise<{ retry: readonly unknown[]; stale: number }>;
}

/** Which client the consumer uses: masq's SqsSource on the SDK (the SQS ceiling) or the minimal SigV4 one (the wire floor). */
export type CeilingClient = "sdk" | "wire";

export interface SqsCeilingResult {
  messages: number;
  seconds: number;
  perSecond: number;
  receiveCalls: number;
  emptyReceives: number;
  deleteCalls: number;
  /** CPU time (user + system) of the consumer process per message, in µs, its start-up included (as masq's). */
  cpuUsPerMessage: number;
  /** The same for its main thread alone (null on a Node without process.threadCpuUsage); the rest is V8's and libuv's helpers. */
  mainThreadCpuUsPerMessage?: number | null;
  maxRssMb: number;
}

/**
 * The SQS ceiling: how fast this SQS server can be drained by a consumer with masq's concurrency that does nothing
 * else. `receivers` loops each long-poll (10 per call, WaitTimeSeconds 1, the same system attributes as masq) and
 * hand every non-empty answer to DeleteMessageBatch without waiting for it, as masq's receivers do not wait for
 * their deletes either. It uses masq's own SqsSource and client settings, so the only difference from masq is
 * the work in between. The clock runs from the first receive to the end of the last delete.
 * Run it through runSqsCeilingProcess: in a fresh process, like masq, so neither starts with a warm JIT.
 */
export async function measureSqsCeiling(source: CeilingSource, opts: { receivers: number; expected: number; timeoutMs?: number }): Promise<SqsCeilingResult> {
  const deadline = Date.now() + (opts.timeoutMs ?? 600_000);
  let received = 0;
  let deleted = 0;
  let receiveCalls = 0;
  let emptyReceives = 0;
  let deleteCalls = 0;
  const deletes: Promise<void>[] = [];
  const seen = new Set<string>();

  // masq reads the queue's attributes before its pipeline starts (and its clock with it); so does the consumer, so
  // that neither pays the SDK's first-call set-up on the clock.
  await source.counts();
  // Once everything is received, the other receivers' long polls are cut short: they would only wait out their
  // WaitTimeSeconds on an empty queue. The clock stops at the last delete, as masq's stops at its last commit.
  const done = new AbortController();
  let lastDeleteAt = 0;
  const started = performance.now();
  const receiver = async () => {
    while (received < opts.expected) {
      if (Date.now() > deadline) throw new Error(`SQS ceiling: only ${received} of ${opts.expected} messages received before the timeout`);
      let messages;
      try {
        messages = await source.receiveBatch({ waitTimeSeconds: 1, visibilityTimeoutSeconds: 60, signal: done.signal });
      } catch (err) {
        if (done.signal.aborted) break;
        throw err;
      }
      receiveCalls++;
      if (messages.length === 0) {
        emptyReceives++;
        continue;
      }
      for (const m of messages) seen.add(m.messageId);
      received += messages.length;
      if (received >= opts.expected) done.abort();
      deleteCalls += Math.ceil(messages.length / 10);
      deletes.push(
        source.deleteBatch(messages).then((r) => {
          if (r.retry.length + r.stale > 0) throw new Error(`SQS ceiling: ${r.retry.length + r.stale} deletes failed`);
          deleted += messages.length;
          lastDeleteAt = performance.now();
        }),
      );
    }
  };
  await Promise.all(Array.from({ length: opts.receivers }, receiver));
  await Promise.all(deletes);
  const seconds = (lastDeleteAt - started) / 1000;
  const usage = process.resourceUsage();
  const mainUs = mainThreadCpuUs();
  if (seen.size !== opts.expected || deleted !== received) {
    throw new Error(`SQS ceiling: received ${received} (${seen.size} distinct), deleted ${deleted}, expected ${opts.expected}`);
  }
  return {
    messages: seen.size,
    seconds,
    perSecond: seen.size / seconds,
    receiveCalls,
    emptyReceives,
    deleteCalls,
    cpuUsPerMessage: (usage.userCPUTime + usage.systemCPUTime) / seen.size,
    mainThreadCpuUsPerMessage: mainUs === null ? null : mainUs / seen.size,
    maxRssMb: Math.round(usage.maxRSS / 1024),
  };
}

/** This thread's CPU time so far (µs); null where Node lacks process.threadCpuUsage (before 23.9). */
function mainThreadCpuUs(): number | null {
  const f = (process as { threadCpuUsage?: () => NodeJS.CpuUsage }).threadCpuUsage;
  if (f === undefined) return null;
  const u = f.call(process);
  return u.user + u.system;
}

const CONSUMER = fileURLToPath(new URL("./sqs-ceiling-consumer.ts", import.meta.url));

/** measureSqsCeiling in a process of its own (sqs-ceiling-consumer.ts) on either client; its result comes back as JSON on stdout. */
export async function runSqsCeilingProcess(opts: { endpoint: string; queueUrl: string; receivers: number; expected: number; client?: CeilingClient; cpuProfDir?: string | undefined }): Promise<SqsCeilingResult> {
  const client = opts.client ?? "sdk";
  const name = client === "sdk" ? "sqs-ceiling" : "wire-floor";
  const child = spawn(process.execPath, [...(opts.cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${opts.cpuProfDir}`, `--cpu-prof-name=${name}-\${pid}.cpuprofile`] : []), CONSUMER], {
    env: { ...process.env, CEILING_CLIENT: client, CEILING_ENDPOINT: opts.endpoint, CEILING_QUEUE_URL: opts.queueUrl, CEILING_RECEIVERS: String(opts.receivers), CEILING_EXPECTED: String(opts.expected) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  if (code !== 0) throw new Error(`${name} consumer exited with ${code}: ${err.trim()}`);
  return JSON.parse(out.trim().split("\n").at(-1)!) as SqsCeilingResult;
}
