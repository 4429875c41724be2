/**
 * The one boundary between the runner (main thread) and a prepare thread (prepare-worker.ts): a batch in, a sealed
 * batch out. Both sides import these types and nothing else of each other. No state is shared: each message is
 * copied (strings and a few arrays, not an object per message, both ways: see SealedColumns), and key material goes
 * only into a thread, once per key, never back and never into a log.
 */
import type { Outcome, SealedBatch, VaultEntry, VaultEpochs } from "./write-batch.ts";

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
  /** Asks for the thread's CPU time (at shutdown). */
  | { type: "usage" };

/** Thread → main. A thread that throws is not answered for: it dies, and a dead thread is fatal to masq. */
export type FromPrepareThread =
  | { type: "prepared"; id: number; batch: SealedColumns; /** Encryptions made, of the `uses` reserved. */ sealed: number }
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

/**
 * A sealed batch as it crosses back to the main thread: the rows column by column, the rare quarantine records as
 * they are. Copying a thousand row outcomes as objects (each with a row object and two Dates) cost the main thread
 * about 2.3 µs per message to deserialise, the columns about 0.4 and 0.2 more to make the objects again (measured
 * with node:v8 serialize/deserialize, which postMessage uses). Bodies going in are already columns of strings.
 */
export interface SealedColumns {
  keyVersion: number;
  vaultEpoch: number | null;
  vault: readonly VaultEntry[];
  /** Every outcome that is not a row, with its index among the batch's outcomes; rows fill the other indexes in order. */
  others: { at: number; outcome: Outcome }[];
  messageId: string[];
  /** ms since epoch, or null. */
  sentAt: (number | null)[];
  receivedAt: number[];
  bodyLength: number[];
  userId: string[];
  deviceType: string[];
  maskedIp: string[];
  maskedDeviceId: string[];
  locale: (string | null)[];
  appVersion: number[];
  createDate: string[];
}

/** Thread side. The outcomes hold no originals by now (VaultSealer.seal drops them). */
export function toColumns(batch: SealedBatch): SealedColumns {
  const c: SealedColumns = {
    keyVersion: batch.keyVersion,
    vaultEpoch: batch.vaultEpoch,
    vault: batch.vault,
    others: [],
    messageId: [],
    sentAt: [],
    receivedAt: [],
    bodyLength: [],
    userId: [],
    deviceType: [],
    maskedIp: [],
    maskedDeviceId: [],
    locale: [],
    appVersion: [],
    createDate: [],
  };
  const { outcomes } = batch;
  for (let i = 0; i < outcomes.length; i++) {
    const o = outcomes[i]!;
    if (o.kind !== "row") {
      c.others.push({ at: i, outcome: o });
      continue;
    }
    c.messageId.push(o.messageId);
    c.sentAt.push(o.sentAt === null ? null : o.sentAt.getTime());
    c.receivedAt.push(o.receivedAt.getTime());
    c.bodyLength.push(o.bodyLength);
    c.userId.push(o.row.userId);
    c.deviceType.push(o.row.deviceType);
    c.maskedIp.push(o.row.maskedIp);
    c.maskedDeviceId.push(o.row.maskedDeviceId);
    c.locale.push(o.row.locale);
    c.appVersion.push(o.row.appVersion);
    c.createDate.push(o.row.createDate);
  }
  return c;
}

/** Main thread side: the batch as toColumns was given it, outcome for outcome. */
export function fromColumns(c: SealedColumns): SealedBatch {
  const outcomes = new Array<Outcome>(c.messageId.length + c.others.length);
  let row = 0;
  let other = 0;
  for (let i = 0; i < outcomes.length; i++) {
    const next = c.others[other];
    if (next !== undefined && next.at === i) {
      outcomes[i] = next.outcome;
      other++;
      continue;
    }
    const sentAt = c.sentAt[row]!;
    outcomes[i] = {
      messageId: c.messageId[row]!,
      sentAt: sentAt === null ? null : new Date(sentAt),
      receivedAt: new Date(c.receivedAt[row]!),
      bodyLength: c.bodyLength[row]!,
      kind: "row",
      row: {
        userId: c.userId[row]!,
        deviceType: c.deviceType[row]!,
        maskedIp: c.maskedIp[row]!,
        maskedDeviceId: c.maskedDeviceId[row]!,
        locale: c.locale[row]!,
        appVersion: c.appVersion[row]!,
        createDate: c.createDate[row]!,
      },
    };
    row++;
  }
  return { keyVersion: c.keyVersion, outcomes, vault: c.vault, vaultEpoch: c.vaultEpoch };
}
