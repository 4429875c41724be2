import type pg from "pg";
import { commitBatch, type CommitResult, type FromThread } from "./commit-batch.ts";
import type { TableName } from "../sink/table-name.ts";
import { StaleKeyError, StaleVaultError } from "./write-batch.ts";
import type { IngestKeys } from "./ingest-keys.ts";
import type { FatalError } from "../errors.ts";
import type { Pseudonymizer } from "./pseudonymize.ts";
import type { IncomingMessage, Outcome, SealedBatch, VaultEpochs } from "./batch.ts";
import { prepareOutcome } from "./prepare.ts";

/**
 * Preparing is synchronous and its cost grows with the bodies (parsing above all): after every YIELD_EVERY_CHARS of
 * bodies the event loop runs once, so that /healthz, visibility extensions and receives are served while a batch of
 * large bodies is prepared.
 */
const YIELD_EVERY_CHARS = 1024 * 1024;

/**
 * A batch masked and sealed, ready to commit; `settle` says whether it committed, and under which vault epochs (the
 * sealer then knows its vault rows), or null when it did not.
 */
export interface PreparedBatch {
  /** Sealed (columns), or from a prepare thread already in the statement's wire form (commit-batch.ts). */
  batch: SealedBatch | FromThread;
  settle(committed: VaultEpochs | null): void;
}

/**
 * Masks and seals a batch: in this thread (inThreadPreparer, what Lambda and tests use)
 * or in prepare threads (prepare-threads.ts). Either way the same pure functions do the work.
 */
export interface BatchPreparer {
  /** Masks with the pseudonym key active now (keys.pseudonym) and seals with the current data key. */
  prepare(messages: readonly IncomingMessage[], keys: IngestKeys, signal?: AbortSignal): Promise<PreparedBatch>;
  /** Settles when the preparer can no longer work (a prepare thread died): fatal to the run. */
  readonly failure?: Promise<FatalError> | undefined;
}

/** Prepares on the calling thread, yielding to the event loop now and then; seals with the process's sealer. */
export const inThreadPreparer: BatchPreparer = {
  async prepare(messages, keys, signal) {
    const key = keys.pseudonym;
    const outcomes = await prepareYielding(messages, key.pseudonymizer);
    const batch = await keys.sealer.seal(outcomes, key.version, signal);
    return { batch, settle: (committed) => committed !== null && keys.sealer.committed(batch, committed) };
  },
};

/**
 * Masks, seals and commits one batch of messages (ids distinct). The masking happens here, at commit time, with the
 * pseudonym key active now: when a rotation switches keys between masking and commit, the statement writes nothing
 * (StaleKeyError) and the batch is masked again with the new key. Transient, data and fatal errors propagate as
 * commitBatch throws them.
 */
export async function commitMessages(
  pool: pg.Pool,
  table: TableName,
  keys: IngestKeys,
  messages: readonly IncomingMessage[],
  signal?: AbortSignal,
  preparer: BatchPreparer = inThreadPreparer,
): Promise<CommitResult> {
  for (let attempt = 0; ; attempt++) {
    const prepared = await preparer.prepare(messages, keys, signal);
    let committed: VaultEpochs | null = null;
    try {
      const r = await commitBatch(pool, table, prepared.batch);
      // A result without epochs (nothing was written) teaches the sealer nothing: no epoch to hold it under.
      committed = r.vaultEpochs ?? null;
      return r;
    } catch (err) {
      // Two switches in a row are a rotation racing another; past that, back off like any transient error.
      if (err instanceof StaleVaultError && attempt < 2) {
        // Vault values were deleted (erase, prune) since the sealer learnt what the vault holds: seal it all again.
        keys.sealer.staleVault(err.epoch);
        continue;
      }
      if (!(err instanceof StaleKeyError) || attempt >= 2) throw err;
      await keys.refresh(signal);
    } finally {
      prepared.settle(committed);
    }
  }
}

async function prepareYielding(messages: readonly IncomingMessage[], p: Pseudonymizer): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  let since = 0;
  for (const m of messages) {
    outcomes.push(prepareOutcome(m, p));
    since += m.body.length;
    if (since >= YIELD_EVERY_CHARS) {
      since = 0;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  return outcomes;
}
