import { Worker } from "node:worker_threads";
import { FatalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { IncomingMessage, SealedBatch, VaultEntry } from "./batch.ts";
import type { IngestKeys } from "../keys/ingest-keys.ts";
import type { BatchPreparer, PreparedBatch } from "./commit-batch.ts";
import { maxSealsFor, type FromPrepareThread, type PrepareThreadData, type ThreadUsage, type ToPrepareThread } from "./prepare-protocol.ts";

/** The worker's module beside this one: .ts when masq runs from its sources, .js when compiled. */
const WORKER_URL = new URL(import.meta.url.endsWith(".ts") ? "./prepare-worker.ts" : "./prepare-worker.js", import.meta.url);

type Prepared = Extract<FromPrepareThread, { type: "prepared" }>;
type Columns = Extract<FromPrepareThread, { type: "sealed" }>;

interface Thread {
  name: string;
  worker: Worker;
  /** Batches sent and not yet answered. */
  waiting: Map<number, { resolve: (r: Prepared) => void; reject: (e: Error) => void }>;
  /** Batches whose columns were asked for (a refused statement, split) and not yet sent. */
  asked: Map<number, { resolve: (r: Columns) => void; reject: (e: Error) => void }>;
  /** What the thread was already given, so that key material crosses once per key. */
  pseudonymVersions: Set<number>;
  dataKeyId: string | undefined;
  usage: ((u: ThreadUsage) => void) | undefined;
}

/**
 * Prepare threads: the CPU work of a batch (parse, validate, mask, seal) runs in `count` worker threads while the
 * main thread receives, commits and deletes. The runner still owns flow control (what a thread works on is held,
 * and counted against the in-flight caps, like everything between receive and delete) and shutdown (close()).
 * Data keys are reserved here, on the main thread, which alone talks to KMS and Postgres: for the most a batch can
 * need, the unused part given back when the thread says what it sealed. A thread that dies fails every batch it
 * held and settles `failure`: the runner stops, and nothing a dead thread touched is deleted.
 */
export class PrepareThreads implements BatchPreparer {
  readonly failure: Promise<FatalError>;
  private readonly threads: Thread[];
  private failed: FatalError | undefined;
  private fail!: (e: FatalError) => void;
  private closing = false;
  private nextId = 1;

  constructor(opts: { count: number; logger: Logger; exitAfterBatches?: number | undefined }) {
    this.failure = new Promise((resolve) => (this.fail = resolve));
    this.threads = Array.from({ length: opts.count }, (_, i) => this.start(`prepare-${i + 1}`, opts.logger, opts.exitAfterBatches));
  }

  async prepare(messages: readonly IncomingMessage[], keys: IngestKeys, signal?: AbortSignal): Promise<PreparedBatch> {
    this.throwIfFailed();
    // The thread with the least work waiting.
    let t = this.threads[0]!;
    for (const c of this.threads) if (c.waiting.size < t.waiting.size) t = c;
    const pseudonym = keys.pseudonym;
    const uses = maxSealsFor(messages.length);
    const dk = await keys.dataKeys.reserve(uses, signal);
    this.throwIfFailed();
    const id = this.nextId++;
    const n = messages.length;
    const msg: ToPrepareThread = {
      type: "batch",
      id,
      messageIds: new Array<string>(n),
      bodies: new Array<string>(n),
      sentAt: new Array<number | null>(n),
      receivedAt: new Array<number>(n),
      pseudonym: { version: pseudonym.version },
      vaultEpoch: keys.sealer.vaultEpoch,
      dataKey: { id: dk.id, uses },
    };
    for (let i = 0; i < n; i++) {
      const m = messages[i]!;
      msg.messageIds[i] = m.messageId;
      msg.bodies[i] = m.body;
      msg.sentAt[i] = m.sentAt === null ? null : m.sentAt.getTime();
      msg.receivedAt[i] = m.receivedAt.getTime();
    }
    // Copies of exactly the key bytes (a view would carry its whole buffer across), zeroed once posted.
    const copies: Uint8Array[] = [];
    if (!t.pseudonymVersions.has(pseudonym.version)) copies.push((msg.pseudonym.key = Uint8Array.from(pseudonym.key)));
    if (t.dataKeyId !== dk.id) copies.push((msg.dataKey.key = Uint8Array.from(dk.key)));
    const answer = new Promise<Prepared>((resolve, reject) => t.waiting.set(id, { resolve, reject }));
    try {
      t.worker.postMessage(msg);
    } finally {
      for (const c of copies) c.fill(0);
    }
    t.pseudonymVersions.add(pseudonym.version);
    t.dataKeyId = dk.id;
    let r: Prepared;
    try {
      r = await answer;
    } finally {
      t.waiting.delete(id);
    }
    keys.dataKeys.unreserve(dk, uses - r.sealed);
    return {
      batch: "encoded" in r.batch ? { encoded: r.batch.encoded, sealed: () => this.columns(t, id) } : asBuffers(r.batch.sealed),
      settle: (committed) => {
        if (this.failed === undefined && !this.closing) this.post(t, { type: "settled", id, committed });
      },
    };
  }

  /** The columns of a batch the thread encoded, for commit-batch.ts to split (rare: the database refused it). */
  private async columns(t: Thread, id: number): Promise<SealedBatch> {
    this.throwIfFailed();
    const answer = new Promise<Columns>((resolve, reject) => t.asked.set(id, { resolve, reject }));
    this.post(t, { type: "sealed", id });
    try {
      return asBuffers((await answer).batch);
    } finally {
      t.asked.delete(id);
    }
  }

  /** Each thread's CPU time, then the threads stop. Called once the runner has stopped. */
  async close(): Promise<ThreadUsage[]> {
    this.closing = true;
    const usage = await Promise.all(
      this.threads.map(
        (t) =>
          new Promise<ThreadUsage | undefined>((resolve) => {
            if (t.worker.threadId === -1 || this.failed) return resolve(undefined);
            t.usage = resolve;
            // A thread that does not answer promptly is not waited for.
            setTimeout(() => resolve(undefined), 2_000).unref();
            this.post(t, { type: "usage" });
          }),
      ),
    );
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
    return usage.filter((u) => u !== undefined);
  }

  private start(name: string, logger: Logger, exitAfterBatches: number | undefined): Thread {
    const workerData: PrepareThreadData = { name, exitAfterBatches };
    const worker = new Worker(WORKER_URL, { name, workerData });
    const t: Thread = { name, worker, waiting: new Map(), asked: new Map(), pseudonymVersions: new Set(), dataKeyId: undefined, usage: undefined };
    worker.on("message", (m: FromPrepareThread) => {
      if (m.type === "prepared") t.waiting.get(m.id)?.resolve(m);
      else if (m.type === "sealed") t.asked.get(m.id)?.resolve(m);
      else t.usage?.({ name, cpuUserUs: m.cpuUserUs, cpuSystemUs: m.cpuSystemUs });
    });
    // Only the error's name: its message could quote what the thread was working on.
    worker.on("error", (err: Error) => this.died(t, logger, `threw ${err.name}`));
    worker.on("exit", (code) => {
      if (!this.closing) this.died(t, logger, `exited with code ${code}`);
    });
    return t;
  }

  private died(t: Thread, logger: Logger, how: string): void {
    if (this.failed === undefined) {
      this.failed = new FatalError(`prepare thread ${t.name} ${how}`, {
        what: `a prepare thread stopped (${t.name} ${how})`,
        object: "MASQ_PREPARE_THREADS",
        hint: "nothing uncommitted was deleted and those messages will be redelivered; start masq again, and report this as a bug in masq (MASQ_PREPARE_THREADS=0 prepares on the main thread)",
      });
      logger.error({ thread: t.name, how }, "a prepare thread stopped");
      this.fail(this.failed);
    }
    for (const th of this.threads) {
      for (const w of th.waiting.values()) w.reject(this.failed);
      for (const w of th.asked.values()) w.reject(this.failed);
      th.waiting.clear();
      th.asked.clear();
    }
  }

  private throwIfFailed(): void {
    if (this.failed !== undefined) throw this.failed;
  }

  private post(t: Thread, m: ToPrepareThread): void {
    t.worker.postMessage(m);
  }
}

/** Buffers arrive as plain Uint8Arrays: viewed as Buffers again (no copy), as the sealed types say. */
function asBuffers(batch: SealedBatch): SealedBatch {
  for (const v of batch.vault as VaultEntry[]) {
    v.nonce = toBuffer(v.nonce);
    v.ciphertext = toBuffer(v.ciphertext);
  }
  for (const o of batch.quarantine) {
    if (o.sealedBody) {
      o.sealedBody.nonce = toBuffer(o.sealedBody.nonce);
      o.sealedBody.ciphertext = toBuffer(o.sealedBody.ciphertext);
    }
  }
  return batch;
}

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** The main thread's CPU time, named as the "process usage" line names it. */
export function mainThreadUsage(): ThreadUsage {
  const u = process.threadCpuUsage();
  return { name: "main", cpuUserUs: u.user, cpuSystemUs: u.system };
}
