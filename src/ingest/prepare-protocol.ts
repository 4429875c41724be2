/**
 * The one boundary between the runner (main thread) and a prepare thread (prepare-worker.ts): a batch in, a sealed
 * batch out. Both sides import these types and nothing else of each other. No state is shared: each message is
 * copied (strings and a few arrays, not an object per message, both ways: the rows go back as the columns the batch
 * statement takes, batch.ts), and key material goes only into a thread, once per key, never back and never into a log.
 */
import type { SealedBatch, VaultEpochs } from "./batch.ts";
import type { EncodedBatch } from "./write-batch.ts";

/** Given at start (workerData). */
export interface PrepareThreadData {
  /** "prepare-1", "prepare-2", …: the thread's name in logs and in the "process usage" line. */
  name: string;
  /**
   * Test hook (MASQ_TEST_PREPARE_THREAD_EXIT_AFTER, read only from the environment of the process, never from a
   * message): the thread exits abruptly when this many batches have arrived, as a crashed thread would.
   */
  exitAfterBatches?: number | undefined;
}

/** Main → thread. */
export type ToPrepareThread =
  | {
      type: "batch";
      id: number;
      /** The batch, column by column (index i is one message). */
      messageIds: string[];
      bodies: string[];
      /** SentTimestamp in ms since epoch, or null; the receive time in ms since epoch. */
      sentAt: (number | null)[];
      receivedAt: number[];
      /** The pseudonym key to mask with; `key` only the first time the thread is given this version. */
      pseudonym: { version: number; key?: Uint8Array | undefined };
      /** The vault epoch the runner learnt (VaultSealer.vaultEpoch): newer than the thread's, it forgets what it knew. */
      vaultEpoch: number;
      /**
       * The data key to seal with, reserved by the runner for `uses` encryptions (the most the batch can need);
       * `key` only the first time the thread is given this id.
       */
      dataKey: { id: string; uses: number; key?: Uint8Array | undefined };
    }
  /** The batch with this id committed under these vault epochs (the thread's sealer may learn its vault rows), or not (null). */
  | { type: "settled"; id: number; committed: VaultEpochs | null }
  /** Asks for the columns of the batch with this id, not yet settled: its statement was refused, and it is split. */
  | { type: "sealed"; id: number }
  /** Asks for the thread's CPU time (at shutdown). */
  | { type: "usage" };

/** Thread → main. A thread that throws is not answered for: it dies, and a dead thread is fatal to masq. */
export type FromPrepareThread =
  | {
      type: "prepared";
      id: number;
      /**
       * The batch in the statement's wire form when it fits one statement (the usual case): the main thread sends it
       * to Postgres as it is. Otherwise (large quarantined bodies, split by size) the sealed batch itself.
       */
      batch: { encoded: EncodedBatch } | { sealed: SealedBatch };
      /** Encryptions made, of the `uses` reserved. */
      sealed: number;
    }
  | { type: "sealed"; id: number; batch: SealedBatch }
  | { type: "usage"; cpuUserUs: number; cpuSystemUs: number };

/** One thread's CPU time, as the "process usage" line reports it. */
export interface ThreadUsage {
  name: string;
  cpuUserUs: number;
  cpuSystemUs: number;
}

/** The most encryptions a batch can need: two PII values per row, one body per quarantined message. */
export function maxSealsFor(count: number): number {
  return 2 * count;
}
