import type pg from "pg";
import { commitBatch, type CommitResult } from "../sink/commit-batch.ts";
import type { TableName } from "../sink/table-name.ts";
import { StaleKeyError, StaleVaultError } from "../sink/write-batch.ts";
import type { IngestKeys } from "../vault/ingest-keys.ts";
import type { Pseudonymizer } from "../mask/pseudonymize.ts";
import type { Outcome } from "../sink/write-batch.ts";
import { prepareOutcome, type IncomingMessage } from "./prepare.ts";

/**
 * Preparing is synchronous and its cost grows with the bodies (parsing above all): after every YIELD_EVERY_CHARS of
 * bodies the event loop runs once, so that /healthz, visibility extensions and receives are served while a batch of
 * large bodies is prepared.
 */
const YIELD_EVERY_CHARS = 1024 * 1024;

/**
 * Masks, seals and commits one batch of messages (ids distinct). The masking happens here, at commit time, with the
 * pseudonym key active now: when a rotation switches keys between masking and commit, the statement writes nothing
 * (StaleKeyError) and the batch is masked again with the new key. Transient, data and fatal errors propagate as
 * commitBatch throws them.
 */
export async function commitMessages(pool: pg.Pool, table: TableName, keys: IngestKeys, messages: readonly IncomingMessage[], signal?: AbortSignal): Promise<CommitResult> {
  for (let attempt = 0; ; attempt++) {
    const key = keys.pseudonym;
    const outcomes = await prepareYielding(messages, key.pseudonymizer);
    const batch = await keys.sealer.seal(outcomes, key.version, signal);
    try {
      const r = await commitBatch(pool, table, batch);
      keys.sealer.committed(batch);
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
