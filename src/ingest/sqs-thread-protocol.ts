/**
 * The one boundary between the runner (main thread) and the SQS thread (sqs-thread-worker.ts): a call in, its
 * result or its classified error out. Both sides import these types and nothing else of each other. No state is
 * shared: the runner keeps every receipt handle it holds and sends the ones a call needs; the thread keeps nothing
 * between calls but its SDK client.
 */
import { ConfigError, FatalError, TransientError, type ErrorHelp } from "../errors.ts";
import type { SqsProtocol, SqsProtocolSetting } from "../settings/config.ts";
import type { SqsClientOptions } from "./sqs-client.ts";
import type { QueueCounts, QueueLimits } from "./sqs-source.ts";

/**
 * Given at start (workerData). The thread starts before the endpoint's protocol is known, so that loading the SDK
 * overlaps masq's other start-up work, and finds the protocol itself (`detect`); the client is made by `open`.
 */
export interface SqsThreadData {
  queueUrl: string;
  /**
   * Test hook (MASQ_TEST_SQS_THREAD_EXIT_AFTER, read only from the environment of the process, never from a
   * message): the thread exits abruptly when this many delete calls have arrived, as a crashed thread would.
   */
  exitAfterDeletes?: number | undefined;
}

/**
 * Main → thread. `signal` names one of the main thread's AbortSignals (0: none; -1: one that has already fired);
 * the thread aborts every call under it when an `abort` for it arrives, and forgets the number.
 */
export type ToSqsThread =
  | { type: "detect"; id: number; signal: number; region: string; endpoint: string | undefined; setting: SqsProtocolSetting }
  /** The client as createSqsClient builds it, credentials excepted: the thread reads the SDK's chain itself. */
  | { type: "open"; client: Omit<SqsClientOptions, "credentials"> }
  | { type: "receive"; id: number; signal: number; waitTimeSeconds: number; visibilityTimeoutSeconds: number; max: number }
  | { type: "delete"; id: number; signal: number; receiptHandles: string[] }
  | { type: "extend"; id: number; signal: number; receiptHandles: string[]; seconds: number }
  | { type: "counts"; id: number; signal: number }
  | { type: "limits"; id: number; signal: number }
  | { type: "abort"; signal: number }
  /** Asks for the thread's CPU time (at shutdown). */
  | { type: "usage" };

/** Thread → main. A thread that throws is not answered for: it dies, and a dead thread is fatal to masq. */
export type FromSqsThread =
  | { type: "detected"; id: number; protocol: SqsProtocol }
  | { type: "received"; id: number; messages: ReceivedColumns }
  /** `retry`: indexes into the call's receipt handles that failed transiently; `stale`: how many were no longer valid. */
  | { type: "deleted"; id: number; retry: number[]; stale: number }
  | { type: "extended"; id: number; failed: number }
  | { type: "counts"; id: number; counts: QueueCounts }
  | { type: "limits"; id: number; limits: QueueLimits }
  | { type: "failed"; id: number; error: SqsErrorData }
  | { type: "usage"; cpuUserUs: number; cpuSystemUs: number };

/**
 * One receive's messages, column by column (index i is one message): a few arrays of strings and numbers rather
 * than an object (with two Dates) per message, which the structured clone would walk field by field.
 */
export interface ReceivedColumns {
  messageId: string[];
  receiptHandle: string[];
  body: string[];
  /** SentTimestamp in ms since epoch, or null. */
  sentAt: (number | null)[];
  receiveCount: number[];
  /** When the answer arrived, ms since epoch: one per receive. */
  receivedAt: number;
}

/** An error as SqsSource classified it on the thread (sqs-errors.ts), carried as data. */
export type SqsErrorData =
  | { kind: "transient"; message: string; cause: string; help: ErrorHelp }
  | { kind: "config"; setting: string; problem: string; help: ErrorHelp }
  | { kind: "fatal"; message: string; help: ErrorHelp };

/** Thread side: anything SqsSource threw. It classifies every SDK error; anything else is a bug, hence fatal. */
export function toErrorData(err: unknown): SqsErrorData {
  if (err instanceof TransientError) return { kind: "transient", message: err.message, cause: err.cause_, help: { ...err.help } };
  if (err instanceof ConfigError) return { kind: "config", setting: err.setting, problem: err.problem, help: { ...err.help } };
  if (err instanceof FatalError) return { kind: "fatal", message: err.message, help: { ...err.help } };
  return { kind: "fatal", message: `unexpected error in the SQS thread: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`, help: {} };
}

/** Main thread side: the same class, message and help as on the thread. */
export function fromErrorData(e: SqsErrorData): TransientError | ConfigError | FatalError {
  if (e.kind === "transient") return new TransientError(e.message, e.cause, e.help);
  if (e.kind === "config") return new ConfigError(e.setting, e.problem, e.help);
  return new FatalError(e.message, e.help);
}
