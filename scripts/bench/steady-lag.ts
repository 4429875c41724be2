import { SendMessageBatchCommand } from "@aws-sdk/client-sqs";
import type { BenchEnv } from "./environment.ts";
import { createQueue, deleteQueue } from "./fill-queue.ts";
import type { MemoryLimit } from "./memory-limit.ts";
import { startMasq } from "./masq-e2e.ts";
import { commitLag, verifyRun, type Verification } from "./verify.ts";
import type { Workload } from "./workload.ts";

export interface SteadyLagResult {
  /** Messages per second offered, evenly spaced, ten per SendMessageBatch. */
  rate: number;
  /** Messages measured: those sent after the warm-up. */
  messages: number;
  /**
   * The first messages, sent at the same rate right after masq started, and left out of lagP50Ms/lagP99Ms/lagMaxMs:
   * masq's first second (its first statements planned, its hot path compiled) is not its steady state. Measured on
   * 2026-12-07, that second held the slowest 1 % of a 30-second phase.
   */
  warmup?: { messages: number; p50Ms: number; p99Ms: number; maxMs: number } | undefined;
  /** The rate actually achieved by the sender. */
  sentPerSecond: number;
  lagP50Ms: number;
  lagP99Ms: number;
  lagMaxMs: number;
  cpuUsPerMessage: number;
  maxRssMb: number;
  verification: Verification;
}

export interface SteadyLagOptions {
  rate: number;
  /** The first this many messages of the workload are the warm-up (SteadyLagResult.warmup). */
  warmupMessages: number;
  receivers: number;
  batchSize: number;
  writers: number;
  masterKey: string;
  masqBin?: string | undefined;
  nodeOptions?: string | undefined;
  memoryLimit?: MemoryLimit | undefined;
  log: (line: string) => void;
}

/**
 * End-to-end lag as a user sees it: masq runs (`masq run`, not a drain) against an empty queue, and messages arrive
 * at a steady rate below its capacity. Lag is each message's commit (ledger committed_at) minus its send, so it is
 * what batching, polling and committing add, with no backlog in front. The run ends once every message sent is in
 * the ledger; masq is then stopped with SIGTERM (its graceful path).
 */
export async function measureSteadyLag(env: BenchEnv, w: Workload, o: SteadyLagOptions): Promise<SteadyLagResult> {
  const n = w.bodies.length;
  const admin = env.sqsClient(env.sqs.endpoint, 32);
  await env.reset();
  const queueUrl = await createQueue(admin, "bench-lag");
  try {
    o.log(`  steady lag: masq run, ${n.toLocaleString("en-US")} messages sent at ${o.rate.toLocaleString("en-US")} msg/s…`);
    const masq = startMasq({
      queueUrl,
      sqsEndpoint: env.sqs.endpoint,
      databaseUrl: env.databaseUrl,
      masterKey: o.masterKey,
      receivers: o.receivers,
      batchSize: o.batchSize,
      writers: o.writers,
      drain: false,
      bin: o.masqBin,
      nodeOptions: o.nodeOptions,
      memoryLimit: o.memoryLimit,
    });
    await masq.started;
    // Let the receivers' first long polls go out before the first message.
    await new Promise((r) => setTimeout(r, 500));

    const sentAt = new Map<string, number>();
    const warmSentAt = new Map<string, number>();
    const sends: Promise<void>[] = [];
    const t0 = performance.now();
    const interval = 10_000 / o.rate;
    for (let i = 0; i * 10 < n; i++) {
      const wait = t0 + i * interval - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      const entries = w.bodies.slice(i * 10, i * 10 + 10).map((b, j) => ({ Id: String(j), MessageBody: b }));
      const issued = Date.now();
      const into = i * 10 < o.warmupMessages ? warmSentAt : sentAt;
      sends.push(
        admin.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries })).then((res) => {
          if ((res.Failed ?? []).length > 0) throw new Error(`SendMessageBatch: ${res.Failed!.length} entries failed`);
          for (const s of res.Successful ?? []) if (s.MessageId !== undefined) into.set(s.MessageId, issued);
        }),
      );
    }
    await Promise.all(sends);
    const sentPerSecond = n / ((performance.now() - t0) / 1000);

    const deadline = Date.now() + 120_000;
    for (;;) {
      const { rows } = await env.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.ingest_ledger");
      if (rows[0]!.n >= n || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    masq.stop();
    const run = await masq.finished;
    const lag = await commitLag(env.db.pool, sentAt);
    const warm = await commitLag(env.db.pool, warmSentAt);
    const verification = await verifyRun(env.db.pool, w, new Map([...warmSentAt, ...sentAt]));
    return {
      rate: o.rate,
      messages: sentAt.size,
      warmup: { messages: warmSentAt.size, p50Ms: warm.p50Ms, p99Ms: warm.p99Ms, maxMs: warm.maxMs },
      sentPerSecond,
      lagP50Ms: lag.p50Ms,
      lagP99Ms: lag.p99Ms,
      lagMaxMs: lag.maxMs,
      cpuUsPerMessage: ((run.cpuUserMs + run.cpuSystemMs) * 1000) / n,
      maxRssMb: run.maxRssMb,
      verification,
    };
  } finally {
    await deleteQueue(admin, queueUrl).catch(() => undefined);
    admin.destroy();
  }
}
