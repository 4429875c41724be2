/**
 * A prepare thread: masks and seals the batches the runner sends (prepare-protocol.ts) with the same pure functions
 * the main thread uses (prepareOutcome, VaultSealer), and sends each back sealed. It does no I/O: keys arrive in
 * the batches, the data key already reserved and stored by the runner. Anything it throws kills it, which the
 * runner treats as fatal.
 */
import { createSecretKey, type KeyObject } from "node:crypto";
import { parentPort, workerData } from "node:worker_threads";
import { createPseudonymizer, type Pseudonymizer } from "./pseudonymize.ts";
import type { Outcome, SealedBatch } from "./batch.ts";
import type { DataKey } from "../keys/data-keys.ts";
import { VaultSealer } from "./vault-sealer.ts";
import { prepareOutcome } from "./prepare.ts";
import { MAX_STATEMENT_BYTES, splitBySize } from "./commit-batch.ts";
import { type FromPrepareThread, type PrepareThreadData, type ToPrepareThread } from "./prepare-protocol.ts";
import { encodeBatch, type EncodedBatch } from "./write-batch.ts";

const port = parentPort!;
const data = workerData as PrepareThreadData;

/** Pseudonymizers by key version: the newest two (a rotation's old and new key). */
const pseudonymizers = new Map<number, Pseudonymizer>();
/** The data key in use, and the one batch's reservation the sealer draws on. */
let dataKey: { id: string; key: Uint8Array; keyObject: KeyObject } | undefined;
let reservation: { key: DataKey; uses: number; used: number } | undefined;
const sealer = new VaultSealer({
  reserve(uses) {
    const r = reservation!;
    if (r.used + uses > r.uses) throw new Error(`a batch needed ${r.used + uses} encryptions, more than the ${r.uses} reserved for it`);
    r.used += uses;
    return Promise.resolve(r.key);
  },
});
/** Batches sent back and not yet settled, so that the sealer learns what committed. */
const unsettled = new Map<number, SealedBatch>();
let batches = 0;

function send(m: FromPrepareThread): void {
  port.postMessage(m);
}

async function handle(m: ToPrepareThread): Promise<void> {
  if (m.type === "usage") {
    const u = process.threadCpuUsage();
    send({ type: "usage", cpuUserUs: u.user, cpuSystemUs: u.system });
    return;
  }
  if (m.type === "sealed") {
    const batch = unsettled.get(m.id);
    if (batch === undefined) throw new Error("the columns of a settled batch were asked for");
    send({ type: "sealed", id: m.id, batch });
    return;
  }
  if (m.type === "settled") {
    const batch = unsettled.get(m.id);
    unsettled.delete(m.id);
    if (batch !== undefined && m.committed !== null) sealer.committed(batch, m.committed);
    return;
  }
  batches++;
  if (data.exitAfterBatches !== undefined && batches >= data.exitAfterBatches) process.exit(1);
  if (m.pseudonym.key !== undefined) {
    pseudonymizers.set(m.pseudonym.version, createPseudonymizer(m.pseudonym.key));
    for (const v of pseudonymizers.keys()) if (v < m.pseudonym.version - 1) pseudonymizers.delete(v);
  }
  if (m.dataKey.key !== undefined) {
    dataKey?.key.fill(0);
    dataKey = { id: m.dataKey.id, key: m.dataKey.key, keyObject: createSecretKey(m.dataKey.key) };
  }
  const p = pseudonymizers.get(m.pseudonym.version);
  if (p === undefined || dataKey?.id !== m.dataKey.id) throw new Error("a batch arrived without the keys it names");
  const outcomes: Outcome[] = new Array<Outcome>(m.messageIds.length);
  for (let i = 0; i < outcomes.length; i++) {
    const sentAt = m.sentAt[i]!;
    outcomes[i] = prepareOutcome({ messageId: m.messageIds[i]!, body: m.bodies[i]!, sentAt: sentAt === null ? null : new Date(sentAt), receivedAt: new Date(m.receivedAt[i]!) }, p);
  }
  reservation = { key: dataKey, uses: m.dataKey.uses, used: 0 };
  // A StaleVaultError on the main thread (an erasure or prune deleted vault values) reaches every thread this way.
  sealer.staleVault(m.vaultEpoch);
  const batch = await sealer.seal(outcomes, m.pseudonym.version);
  const sealed = reservation.used;
  reservation = undefined;
  unsettled.set(m.id, batch);
  const encoded = encodeOne(batch);
  send({ type: "prepared", id: m.id, batch: encoded === undefined ? { sealed: batch } : { encoded }, sealed });
}

/**
 * The batch in the statement's wire form, when it is one statement. Otherwise, or when it cannot be encoded (a string
 * past V8's limit), the main thread gets the sealed batch and does what commit-batch.ts does with it: split it, and
 * classify what fails.
 */
function encodeOne(batch: SealedBatch): EncodedBatch | undefined {
  if (splitBySize(batch, MAX_STATEMENT_BYTES).length !== 1) return undefined;
  try {
    return encodeBatch(batch);
  } catch {
    return undefined;
  }
}

// One message at a time, in order: a batch's reservation is the sealer's only data key while it seals.
let chain = Promise.resolve();
port.on("message", (m: ToPrepareThread) => {
  chain = chain.then(() => handle(m));
  // Rethrown outside the chain: an uncaught error ends the thread, and the runner sees it die.
  chain.catch((err: unknown) => setImmediate(() => { throw err; }));
});
