import type pg from "pg";
import { ConfigError, FatalError } from "../errors.ts";
import { withLockWatch, type Blocker } from "../sink/lock-watch.ts";
import { inTransaction } from "../sink/transaction.ts";
import type { KeyProvider } from "../vault/key-provider.ts";
import { pseudonymKeyContext, pseudonymKeyFingerprint } from "../vault/pseudonym-keys.ts";
import { query } from "../db/query.ts";
import { readRotationState, type RotationState } from "./rotation-state.ts";

interface KeyRow {
  version: number;
  state: "active" | "retiring";
  provider: string;
  fingerprint: string;
}

/**
 * The switch: the active pseudonym key becomes 'retiring' and a new version becomes active, in one transaction.
 * Ingestion's batch statement holds a share lock on the active key's row until it commits
 * (masq.lock_pseudonym_key), so the FOR UPDATE here waits for the batches in flight, and every batch after the
 * commit finds its key retired, writes nothing and is masked again under the new key. From the commit on, no
 * pseudonym under the old key is written. A rotation already switched (a 'retiring' key exists) is resumed instead.
 * The rotation's audit row (`audit`) is appended in the switch's transaction once the key is held: no switch commits
 * without it.
 */
export async function switchPseudonymKey(
  pool: pg.Pool,
  provider: KeyProvider,
  targetTable: string,
  audit: (client: pg.PoolClient, fromVersion: number, toVersion: number) => Promise<unknown>,
  signal?: AbortSignal,
  onBlockerEnded?: (b: Blocker, what: string) => void,
): Promise<{ state: RotationState; switched: boolean }> {
  const existing = await readRotationState(pool);
  if (existing !== undefined) return { state: existing, switched: false };
  const keys = (await query<KeyRow>(pool, "SELECT version, state, provider, fingerprint FROM masq.pseudonym_keys WHERE state IN ('active', 'retiring')")).rows;
  if (keys.some((k) => k.state === "retiring")) {
    throw new FatalError("a pseudonym key is 'retiring' but masq.pseudonym_rotation has no rotation for it; the rotation's state was lost, so it cannot be resumed safely");
  }
  const active = keys.find((k) => k.state === "active");
  if (active === undefined) throw new FatalError("there is no pseudonym key yet (the first masq run creates it): nothing to rotate");
  refuseExternal(active);

  const { rows } = await query<{ next: number }>(pool, "SELECT max(version) + 1 AS next FROM masq.pseudonym_keys");
  const next = rows[0]!.next;
  // The provider call happens before the transaction: while it holds the key row, ingestion's batches wait.
  const g = await provider.generateKey(pseudonymKeyContext(next), signal);
  const fingerprint = pseudonymKeyFingerprint(g.plaintext);
  g.plaintext.fill(0);

  await inTransaction(pool, async (client) => {
    // Whatever a session of a masq role holds is ended after about 1 s (withLockWatch); only a session masq may not
    // end (the owner's, a superuser's) can hold the key this long, and then the error names it. The table lock is
    // queued fairly: a share lock on a key row (ROW SHARE on the table) asked for after it waits behind it, so new
    // ingest sessions cannot keep the switch off one after another, and its one wait of 30 s at most is the
    // switch's deadline (the FOR UPDATE after it finds no other holder).
    await query(client, "SET LOCAL lock_timeout = '30s'");
    const locked = await withLockWatch(pool, client, { what: "the active pseudonym key", onEnded: onBlockerEnded }, async () => {
      await query(client, "LOCK TABLE masq.pseudonym_keys IN EXCLUSIVE MODE");
      return query<KeyRow>(client, "SELECT version, state, provider, fingerprint FROM masq.pseudonym_keys WHERE state = 'active' FOR UPDATE");
    });
    // Appended once the key is held, so that the trail's chain lock (which every audited action waits for) is held
    // for the switch's few statements, not for its wait.
    await audit(client, active.version, next);
    const now = locked.rows[0];
    if (now?.version !== active.version) throw new FatalError("the active pseudonym key changed while the rotation started; run it again");
    // Every batch under the old key holds its share lock from before this moment; every batch under the new key
    // starts after the commit. The quarantine pass tells old records from new ones by it.
    const at = await query<{ switched_at: Date; next: number }>(client, "SELECT clock_timestamp() AS switched_at, max(version) + 1 AS next FROM masq.pseudonym_keys");
    if (at.rows[0]!.next !== next) throw new FatalError("another pseudonym key was added while the rotation started; run it again");
    await query(client, "UPDATE masq.pseudonym_keys SET state = 'retiring' WHERE version = $1", [active.version]);
    await query(client, "INSERT INTO masq.pseudonym_keys (version, state, provider, master_key_id, wrapped, fingerprint) VALUES ($1, 'active', $2, $3, $4, $5)", [
      next,
      provider.name,
      g.masterKeyId,
      Buffer.from(g.wrapped),
      fingerprint,
    ]);
    await query(client, "INSERT INTO masq.pseudonym_rotation (from_version, to_version, switched_at, target_table, phase) VALUES ($1, $2, $3, $4, 'vault')", [
      active.version,
      next,
      at.rows[0]!.switched_at,
      targetTable,
    ]);
  });
  return { state: (await readRotationState(pool))!, switched: true };
}

function refuseExternal(active: KeyRow): void {
  if (active.provider !== "external") return;
  throw new ConfigError(
    "MASQ_PSEUDONYM_KEY",
    `the active pseudonym key (version ${active.version}, fingerprint ${active.fingerprint}) is one given from outside in MASQ_PSEUDONYM_KEY, ` +
      "of which masq keeps only the fingerprint. masq can rotate only a pseudonym key it manages: every process writing with the given key " +
      "would be refused after the switch. Rotate that key where it is kept, or re-ingest with a key masq manages (unset MASQ_PSEUDONYM_KEY on a new database)",
  );
}
