import { sql } from "kysely";
import type pg from "pg";
import { ConfigError, FatalError } from "../errors.ts";
import type { KeyContext, KeyProvider } from "../keys/key-provider.ts";
import { pseudonymKeyContext } from "../keys/pseudonym-keys.ts";
import { classified } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";
import { inTransaction } from "../db/pool.ts";
import { openAuditKey } from "../keys/audit-key.ts";
import { withRotationLock } from "./rotation-state.ts";
import { recordRotation } from "./audit.ts";

export interface RewrapResult {
  /** The master key everything is wrapped under now (or would be, on a dry run). */
  masterKeyId: string;
  dataKeys: number;
  pseudonymKeys: number;
  /** The audit trail's MAC key (0 or 1). */
  auditKeys: number;
  /** The master keys the re-wrapped keys were under, with how many keys each. */
  from: Record<string, number>;
  /**
   * Data keys no configured master key opens (not wrapped by masq, or under a master key not configured), split by
   * whether any vault value or kept body uses them. Unused ones cannot hold anything back and are left as they are,
   * so that a key planted with ingestion's credentials cannot stop the rotation; used ones need the right key.
   */
  unopenable: { used: string[]; unused: string[] };
}

interface WrappedRow {
  id: string;
  master_key_id: string;
  wrapped: Buffer;
}

/** The keys not under the current master key, counted without opening them (what a run left behind). */
export async function countKeysToRewrap(pool: pg.Pool, current: string): Promise<Pick<RewrapResult, "dataKeys" | "pseudonymKeys" | "auditKeys" | "from">> {
  const result = { dataKeys: 0, pseudonymKeys: 0, auditKeys: 0, from: {} as Record<string, number> };
  const { rows } = await classified(
    sql<{ what: string; master_key_id: string; n: number }>`SELECT 'data' AS what, master_key_id, count(*)::int AS n FROM masq.data_keys WHERE master_key_id <> ${current} GROUP BY master_key_id
     UNION ALL
     SELECT 'pseudonym', master_key_id, count(*)::int FROM masq.pseudonym_keys
     WHERE master_key_id <> ${current} AND state <> 'retired' AND provider <> 'external' AND wrapped IS NOT NULL GROUP BY master_key_id
     UNION ALL
     SELECT 'audit', master_key_id, count(*)::int FROM masq.audit_keys WHERE master_key_id <> ${current} GROUP BY master_key_id`.execute(masqQueries(pool)),
  );
  for (const r of rows) {
    if (r.what === "data") result.dataKeys += r.n;
    else if (r.what === "audit") result.auditKeys += r.n;
    else result.pseudonymKeys += r.n;
    result.from[r.master_key_id] = (result.from[r.master_key_id] ?? 0) + r.n;
  }
  return result;
}

/**
 * `masq rotate master-key`: re-wraps every data key and every stored pseudonym key that is not under the current
 * master key, so that the old master key can be dropped. Only the wrapped keys change; no vault ciphertext is
 * touched (the data keys themselves stay the same). With KMS this is ReEncrypt: the keys never leave KMS in plaintext.
 * Batched and idempotent: each batch commits on its own, and a re-run continues with what is left.
 */
export async function rewrapKeys(
  pool: pg.Pool,
  provider: KeyProvider,
  opts: { batchSize: number; dryRun?: boolean; signal?: AbortSignal },
): Promise<RewrapResult> {
  // A dry run re-wraps in memory what the run would, and fails where it would (a key no configured master key opens);
  // only the UPDATEs are left out, so its counts are what the run would write.
  const write = opts.dryRun !== true;
  const db = masqQueries(pool);
  const current = await provider.currentMasterKeyId(opts.signal);
  await refuseOtherProvider(pool, provider);
  const result: RewrapResult = { masterKeyId: current, dataKeys: 0, pseudonymKeys: 0, auditKeys: 0, from: {}, unopenable: { used: [], unused: [] } };
  // Keyset order on id: a key whose update did not apply (changed meanwhile) is not fetched again in this run.
  const unopenable = new Map<string, Error>();
  let after = "00000000-0000-0000-0000-000000000000";
  for (;;) {
    if (opts.signal?.aborted) return result;
    const rows = await classified(
      db.selectFrom("masq.data_keys").select(["id", "master_key_id", "wrapped"]).where("master_key_id", "<>", current).where("id", ">", after).orderBy("id").limit(opts.batchSize).execute(),
    );
    if (rows.length === 0) break;
    after = rows.at(-1)!.id;
    const opened: WrappedRow[] = [];
    const rewrapped: { wrapped: Uint8Array; masterKeyId: string }[] = [];
    for (const r of rows) {
      try {
        rewrapped.push(...(await rewrapAll(provider, [r], () => ({ purpose: "vault", keyId: r.id }))));
        opened.push(r);
      } catch (err) {
        if (!(err instanceof FatalError || err instanceof ConfigError)) throw err;
        unopenable.set(r.id, err);
      }
    }
    if (!write) {
      result.dataKeys += opened.length;
      for (const r of opened) result.from[r.master_key_id] = (result.from[r.master_key_id] ?? 0) + 1;
      continue;
    }
    // Only where the key is still as read: a concurrent re-wrap of the same key is not undone.
    const [ids, wrapped, masterKeyIds, oldMasterKeyIds] = [opened.map((r) => r.id), rewrapped.map((w) => Buffer.from(w.wrapped)), rewrapped.map((w) => w.masterKeyId), opened.map((r) => r.master_key_id)];
    const updated = await classified(
      sql<{ was: string }>`UPDATE masq.data_keys d SET wrapped = u.wrapped, master_key_id = u.master_key_id, rewrapped_at = now()
       FROM unnest(${ids}::uuid[], ${wrapped}::bytea[], ${masterKeyIds}::text[], ${oldMasterKeyIds}::text[]) AS u(id, wrapped, master_key_id, old_master_key_id)
       WHERE d.id = u.id AND d.master_key_id = u.old_master_key_id
       RETURNING u.old_master_key_id AS was`.execute(db),
    );
    result.dataKeys += updated.rows.length;
    for (const r of updated.rows) result.from[r.was] = (result.from[r.was] ?? 0) + 1;
  }

  if (unopenable.size > 0) {
    const ids = [...unopenable.keys()];
    const used = new Set(
      (
        await classified(
          sql<{ id: string }>`SELECT DISTINCT data_key_id::text AS id FROM masq.vault WHERE data_key_id = ANY(${ids}::uuid[])
           UNION SELECT DISTINCT body_data_key_id::text FROM masq.quarantine WHERE body_data_key_id = ANY(${ids}::uuid[])`.execute(db),
        )
      ).rows.map((r) => r.id),
    );
    for (const id of unopenable.keys()) (used.has(id) ? result.unopenable.used : result.unopenable.unused).push(id);
    // A key that values need and no configured master key opens: the configuration is wrong (or the key altered).
    const first = result.unopenable.used[0];
    if (first !== undefined) throw unopenable.get(first)!;
  }

  // The audit key: one row, re-wrapped like a pseudonym key.
  const akeys = await classified(
    db
      .selectFrom("masq.audit_keys")
      .select(["version", sql<string>`version::text`.as("id"), "master_key_id", "wrapped"])
      .where("master_key_id", "<>", current)
      .orderBy("version")
      .execute(),
  );
  for (const k of akeys) {
    if (opts.signal?.aborted) return result;
    const [w] = await rewrapAll(provider, [k], () => ({ purpose: "audit", keyId: `audit-v${k.version}` }));
    const updated = async () =>
      (
        await classified(
          db
            .updateTable("masq.audit_keys")
            .set({ wrapped: Buffer.from(w!.wrapped), master_key_id: w!.masterKeyId, rewrapped_at: sql`now()` })
            .where("version", "=", k.version)
            .where("master_key_id", "=", k.master_key_id)
            .executeTakeFirstOrThrow(),
        )
      ).numUpdatedRows !== 0n;
    if (write && !(await updated())) continue;
    result.auditKeys++;
    result.from[k.master_key_id] = (result.from[k.master_key_id] ?? 0) + 1;
  }

  // Pseudonym keys: a handful of rows. A retired key has no key material left; an external one was never stored.
  const pkeys = await classified(
    db
      .selectFrom("masq.pseudonym_keys")
      .select(["version", sql<string>`version::text`.as("id"), "master_key_id", "wrapped"])
      .where("master_key_id", "<>", current)
      .where("state", "<>", "retired")
      .where("provider", "<>", "external")
      .where("wrapped", "is not", null)
      .orderBy("version")
      .$narrowType<WrappedRow>()
      .execute(),
  );
  for (const k of pkeys) {
    if (opts.signal?.aborted) return result;
    const [w] = await rewrapAll(provider, [k], () => pseudonymKeyContext(k.version));
    // Unless the key retired meanwhile (its key material is gone then, and must stay gone).
    const updated = async () =>
      (
        await classified(
          db
            .updateTable("masq.pseudonym_keys")
            .set({ wrapped: Buffer.from(w!.wrapped), master_key_id: w!.masterKeyId, rewrapped_at: sql`now()` })
            .where("version", "=", k.version)
            .where("master_key_id", "=", k.master_key_id)
            .where("state", "<>", "retired")
            .where("wrapped", "is not", null)
            .executeTakeFirstOrThrow(),
        )
      ).numUpdatedRows !== 0n;
    if (write && !(await updated())) continue;
    result.pseudonymKeys++;
    result.from[k.master_key_id] = (result.from[k.master_key_id] ?? 0) + 1;
  }
  return result;
}

/** No signal: a stop request lets the batch under way finish; the loops check it between batches. */
async function rewrapAll<R extends WrappedRow>(provider: KeyProvider, rows: readonly R[], context: (r: R) => KeyContext): Promise<{ wrapped: Uint8Array; masterKeyId: string }[]> {
  const out: { wrapped: Uint8Array; masterKeyId: string }[] = [];
  // One at a time: data keys are few (one per process per MASQ_DATA_KEY_MAX_AGE_SECONDS), and KMS has rate limits.
  for (const r of rows) out.push(await provider.rewrap(r.wrapped, r.master_key_id, context(r)));
  return out;
}

/** A key wrapped by the other provider (KMS vs local) cannot be re-wrapped by this one: say so before changing anything. */
async function refuseOtherProvider(pool: pg.Pool, provider: KeyProvider): Promise<void> {
  const name = provider.name;
  const { rows } = await classified(
    sql<{ provider: string; n: number }>`SELECT provider, count(*)::int AS n FROM (
       SELECT provider FROM masq.data_keys WHERE provider <> ${name}
       UNION ALL
       SELECT provider FROM masq.pseudonym_keys WHERE provider NOT IN (${name}, 'external') AND state <> 'retired'
       UNION ALL
       SELECT provider FROM masq.audit_keys WHERE provider <> ${name}) k
     GROUP BY provider`.execute(masqQueries(pool)),
  );
  if (rows.length > 0) {
    const what = rows.map((r) => `${r.n} key(s) of the ${r.provider} provider`).join(", ");
    throw new FatalError(
      `${what}: masq rotate master-key moves keys from one master key to another of the same provider (${provider.name} is configured); ` +
        "configure the provider those keys were made with",
    );
  }
}

/**
 * `masq rotate master-key`: every key re-wrapped under the configured master key, one rotation at a time (the
 * rotation lock), between two audit rows; `left`: what is still under another master key afterwards.
 */
export async function rotateMasterKey(pool: pg.Pool, provider: KeyProvider, batchSize: number, signal: AbortSignal): Promise<{ done: RewrapResult; left: Awaited<ReturnType<typeof countKeysToRewrap>> }> {
  const done = await withRotationLock(pool, () => rewrapAudited(pool, provider, batchSize, signal));
  return { done, left: await countKeysToRewrap(pool, done.masterKeyId) };
}

/**
 * The re-wrap between two rows of the trail: the first, sealed and committed before any key is re-wrapped (a rotation
 * whose audit key does not unwrap stops before it changes anything), the second with what was done. The audit key
 * is opened once, first: re-wrapping changes its wrapped form, not the key.
 */
async function rewrapAudited(pool: pg.Pool, provider: KeyProvider, batchSize: number, signal: AbortSignal): Promise<RewrapResult> {
  const key = await openAuditKey(pool, provider, signal, { underNewMasterKey: true });
  try {
    const to = await provider.currentMasterKeyId(signal);
    await inTransaction(pool, (c) => recordRotation(c, key, provider, "rotate-master-key", { event: "started", to }));
    const done = await rewrapKeys(pool, provider, { batchSize, signal });
    await inTransaction(pool, (c) =>
      recordRotation(c, key, provider, "rotate-master-key", {
        event: "finished",
        to: done.masterKeyId,
        from: done.from,
        dataKeys: done.dataKeys,
        pseudonymKeys: done.pseudonymKeys,
        auditKeys: done.auditKeys,
        leftAlone: done.unopenable.unused.length,
      }),
    );
    return done;
  } finally {
    key.key.fill(0);
  }
}
