import { sql } from "kysely";
import type { Kind } from "../ingest/pseudonymize.ts";
import { IntegrityError, nonces, open, seal, vaultAad, type VaultRow } from "../keys/data-keys.ts";
import type { PassContext } from "./audited-command.ts";
import { classified } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";

interface VaultRowAt extends VaultRow {
  created_at: Date;
}

/**
 * The vault pass: every value stored under the old key moves to its pseudonym under the new key. Per batch, in one
 * statement: the value, encrypted again (its associated data names the new pseudonym), goes in under the new key
 * (unless ingestion stored it there already), old → new goes into the rotation map, and the old row goes. A batch
 * is all or nothing, and what is left is exactly what still has the old version: resumable by construction.
 * Returns false when stopped by the signal before the end.
 */
export async function repseudonymizeVault(ctx: PassContext): Promise<boolean> {
  const { state } = ctx;
  const db = masqQueries(ctx.pool);
  const remaining = await classified(
    db.selectFrom("masq.vault").select((eb) => eb.fn.countAll<string>().as("n")).where("key_version", "=", state.fromVersion).executeTakeFirstOrThrow(),
  );
  const total = state.vaultDone + Number(remaining.n);
  let done = state.vaultDone;
  ctx.onBatch?.(done, total);
  // Keyset order: deleted rows are not scanned again by later batches.
  let after: [string, string] = ["", ""];
  for (;;) {
    if (ctx.signal?.aborted) return false;
    const rows = await classified(
      db
        .selectFrom("masq.vault")
        .select(["kind", "pseudonym", "data_key_id", "nonce", "ciphertext", "created_at"])
        .where("key_version", "=", state.fromVersion)
        .where(sql<boolean>`(kind, pseudonym) > (${after[0]}, ${after[1]})`)
        .orderBy("kind")
        .orderBy("pseudonym")
        .limit(ctx.batchSize)
        .$castTo<VaultRowAt>()
        .execute(),
    );
    if (rows.length === 0) return true;
    after = [rows.at(-1)!.kind, rows.at(-1)!.pseudonym];
    const moved = await reseal(ctx, rows);
    const [kinds, olds, news] = [moved.map((m) => m.kind), moved.map((m) => m.oldPseudonym), moved.map((m) => m.newPseudonym)];
    const [dataKeyIds, sealedNonces, ciphertexts, createdAts] = [moved.map((m) => m.dataKeyId), moved.map((m) => m.nonce), moved.map((m) => m.ciphertext), moved.map((m) => m.createdAt)];
    const r = await classified(
      sql<{ n: number }>`WITH input AS (
         SELECT * FROM unnest(${kinds}::text[], ${olds}::text[], ${news}::text[], ${dataKeyIds}::uuid[], ${sealedNonces}::bytea[], ${ciphertexts}::bytea[], ${createdAts}::timestamptz[])
           AS i(kind, old_pseudonym, new_pseudonym, data_key_id, nonce, ciphertext, created_at)
       ), vaulted AS (
         INSERT INTO masq.vault (kind, pseudonym, key_version, data_key_id, nonce, ciphertext, created_at)
         SELECT kind, new_pseudonym, ${state.toVersion}, data_key_id, nonce, ciphertext, created_at FROM input WHERE ciphertext IS NOT NULL
         -- In key order, as ingestion inserts: batches sharing values wait for each other instead of deadlocking.
         ORDER BY kind, new_pseudonym
         ON CONFLICT (kind, pseudonym) DO NOTHING
       ), mapped AS (
         INSERT INTO masq.pseudonym_rotation_map (kind, old_pseudonym, new_pseudonym)
         SELECT kind, old_pseudonym, new_pseudonym FROM input
         ON CONFLICT (kind, old_pseudonym) DO NOTHING
       ), deleted AS (
         DELETE FROM masq.vault v USING input i
         WHERE v.kind = i.kind AND v.pseudonym = i.old_pseudonym AND v.key_version = ${state.fromVersion}
         RETURNING 1
       )
       UPDATE masq.pseudonym_rotation SET vault_done = vault_done + (SELECT count(*) FROM deleted),
         forged = forged + (SELECT count(*) FROM input WHERE ciphertext IS NULL)
       WHERE from_version = ${state.fromVersion}
       RETURNING (SELECT count(*) FROM deleted)::int AS n`.execute(db),
    );
    done += r.rows[0]?.n ?? 0;
    ctx.onBatch?.(done, total);
  }
}

interface Moved {
  kind: Kind;
  oldPseudonym: string;
  newPseudonym: string;
  /** Null for a value found planted or altered: mapped, dropped, not stored again. */
  dataKeyId: string | null;
  nonce: Buffer | null;
  ciphertext: Buffer | null;
  createdAt: Date;
}

/** Decrypts each value, pseudonymises it with the new key and encrypts it again, bound to its new pseudonym. */
async function reseal(ctx: PassContext, rows: readonly VaultRowAt[]): Promise<Moved[]> {
  // No signal passed on: a stop request lets the batch under way finish (the passes check it between batches).
  const keys = await ctx.opened.get(rows.map((r) => r.data_key_id));
  // A value that does not decrypt, or is not its pseudonym's (HMAC under the old key), was planted or altered: it is
  // not moved (it would give the true value's rows the fake value's new pseudonym), and cannot stop the rotation.
  const values = rows.map((r) => {
    let value: Buffer;
    try {
      value = open(keys.get(r.data_key_id)!, { nonce: r.nonce, ciphertext: r.ciphertext }, vaultAad(r.kind, r.pseudonym));
    } catch (err) {
      if (err instanceof IntegrityError) return null;
      throw err;
    }
    if (ctx.previous.pseudonymize(r.kind, value.toString("utf8")) === r.pseudonym) return value;
    value.fill(0);
    return null;
  });
  try {
    // No await between reserve and the last encryption: the data key cannot be replaced (and zeroed) meanwhile.
    const dk = await ctx.dataKeys.reserve(rows.length);
    const nonce = nonces(rows.length);
    return rows.map((r, i) => {
      const value = values[i];
      if (value === null || value === undefined) {
        // Its rows keep one pseudonym of their own under the new key (grouping kept, no value behind it).
        const newPseudonym = ctx.pseudonymizer.pseudonymize(r.kind, `unverified-v${ctx.state.fromVersion}:${r.pseudonym}`);
        return { kind: r.kind, oldPseudonym: r.pseudonym, newPseudonym, dataKeyId: null, nonce: null, ciphertext: null, createdAt: r.created_at };
      }
      const newPseudonym = ctx.pseudonymizer.pseudonymize(r.kind, value.toString("utf8"));
      const sealed = seal(dk.keyObject, value, vaultAad(r.kind, newPseudonym), nonce[i]);
      return { kind: r.kind, oldPseudonym: r.pseudonym, newPseudonym, dataKeyId: dk.id, ...sealed, createdAt: r.created_at };
    });
  } finally {
    for (const v of values) v?.fill(0);
  }
}
