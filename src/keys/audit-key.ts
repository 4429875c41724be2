import type pg from "pg";
import { createHmac } from "node:crypto";
import { sql } from "kysely";
import { inTransaction } from "../db/pool.ts";
import { classified, classifyPgError } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";
import { ConfigError, FatalError, InterruptedError, TransientError } from "../errors.ts";
import { auditMac, clientReported, readAuditRow } from "../lifecycle/audit.ts";
import type { KeyProvider } from "./key-provider.ts";

/** The key behind the audit trail's MACs, unwrapped: only a holder of the master key has it, never the database. */
export interface AuditKey {
  version: number;
  key: Uint8Array;
  /** The first row sealed under it (masq.audit_keys.chain_start, 103_audit.sql): every row from there on has a MAC. */
  chainStart: bigint;
}

interface KeyRow {
  version: number;
  master_key_id: string;
  wrapped: Buffer;
  fingerprint: string;
  chain_start: string;
}

export function auditKeyFingerprint(key: Uint8Array): string {
  return createHmac("sha256", key).update("masq audit key fingerprint").digest("hex").slice(0, 16);
}

const context = (version: number) => ({ purpose: "audit" as const, keyId: `audit-v${version}` });

/**
 * Unwraps the audit key (masq.audit_key()). A database without one gets it from the schema owner only (`masq
 * migrate` with the master key configured, or the owner's first audited action): the database cannot tell whether
 * a wrapped key unwraps, so no other login may store one (103_audit.sql). With KMS this is a Decrypt (or, once, a
 * GenerateDataKey and a Decrypt) with encryption context purpose=audit.
 * underNewMasterKey: `masq rotate master-key`, which may make it under the master key everything is about to move to.
 */
export async function openAuditKey(pool: pg.Pool, provider: KeyProvider, signal?: AbortSignal, opts: { underNewMasterKey?: boolean } = {}): Promise<AuditKey> {
  let row = await readKey(pool);
  if (row === undefined) {
    if (!(await mayCreateAuditKey(pool))) throw noKeyYet();
    await createAuditKey(pool, provider, signal, opts.underNewMasterKey === true);
    row = await readKey(pool);
    if (row === undefined) throw new FatalError("masq.audit_keys holds no audit key after creating one");
  }
  return unwrapAuditKey(row, provider, signal);
}

/** The audit key if the database has one (for verifying, which never makes one); undefined before the first audited action. */
export async function existingAuditKey(db: pg.Pool | pg.PoolClient, provider: KeyProvider, signal?: AbortSignal): Promise<AuditKey | undefined> {
  const row = await readKey(db);
  return row === undefined ? undefined : unwrapAuditKey(row, provider, signal);
}

/** Whether this login may make the audit key (the schema owner): `masq migrate` makes it only then. */
export async function mayCreateAuditKey(pool: pg.Pool): Promise<boolean> {
  const r = await classified(sql<{ ok: boolean }>`SELECT has_function_privilege('masq.create_audit_key(text, text, bytea, text, jsonb)', 'EXECUTE') AS ok`.execute(masqQueries(pool)));
  return r.rows[0]?.ok === true;
}

/**
 * Makes the key, proves that it unwraps (a key that does not would stop every audited command), then stores it
 * with its first row ('audit-key', where the chain begins), sealed with it, in one transaction.
 */
async function createAuditKey(pool: pg.Pool, provider: KeyProvider, signal: AbortSignal | undefined, underNewMasterKey: boolean): Promise<void> {
  if (!underNewMasterKey) await refuseForeignMasterKey(pool, provider, signal);
  const g = await provider.generateKey(context(1), signal);
  try {
    const back = await provider.unwrap(g.wrapped, g.masterKeyId, context(1), signal);
    const proven = auditKeyFingerprint(back) === auditKeyFingerprint(g.plaintext);
    back.fill(0);
    if (!proven) throw new FatalError("the audit key the master key made does not unwrap to itself; nothing was stored");
    const client = await clientReported(provider);
    await inTransaction(pool, async (c) => {
      let seq: string | null;
      try {
        const r = await sql<{ seq: string | null }>`SELECT masq.create_audit_key(${provider.name}, ${g.masterKeyId}, ${Buffer.from(g.wrapped)},
            ${auditKeyFingerprint(g.plaintext)}, ${JSON.stringify(client)})::text AS seq`.execute(masqQueries(c));
        seq = r.rows[0]!.seq;
      } catch (err) {
        if ((err as { code?: string }).code === "42501") throw noKeyYet();
        throw classifyPgError(err);
      }
      // NULL: a racing creator stored its key first; the caller reads and unwraps that one.
      if (seq === null) return;
      const row = await readAuditRow(c, seq);
      if (row === undefined) throw new FatalError(`the audit key's first row ${seq} is not there to seal`);
      await classified(sql`SELECT masq.audit_seal(${seq}, ${auditMac(g.plaintext, row)})`.execute(masqQueries(c)));
    });
  } finally {
    g.plaintext.fill(0);
  }
}

function noKeyYet(): FatalError {
  return new FatalError("this database has no audit key yet, and only the schema owner may make it", {
    what: "this database has no audit key yet",
    hint: "run masq migrate once as the schema owner with the master key configured (MASQ_MASTER_KEY or MASQ_KMS_KEY_ID), then run this again",
  });
}

async function unwrapAuditKey(row: KeyRow, provider: KeyProvider, signal?: AbortSignal): Promise<AuditKey> {
  let key: Uint8Array;
  try {
    key = await provider.unwrap(row.wrapped, row.master_key_id, context(row.version), signal);
  } catch (err) {
    // A provider's own configuration error names its setting and what to check already (KMS: the key, the endpoint).
    if (err instanceof ConfigError || err instanceof TransientError || err instanceof InterruptedError || signal?.aborted === true) throw err;
    throw doesNotUnwrap(row, provider, (err as Error).message);
  }
  if (auditKeyFingerprint(key) !== row.fingerprint) {
    key.fill(0);
    throw doesNotUnwrap(row, provider, "it unwraps to a key with another fingerprint");
  }
  return { version: row.version, key, chainStart: BigInt(row.chain_start) };
}

function doesNotUnwrap(row: KeyRow, provider: KeyProvider, why: string): FatalError {
  const what = `the audit key (masq.audit_keys version ${row.version}, under ${row.master_key_id}) does not unwrap with the configured master key`;
  return new FatalError(`${what}: ${why}`, {
    what,
    object: provider.name === "kms" ? "MASQ_KMS_KEY_ID" : "MASQ_MASTER_KEY",
    hint: `${why}; configure the master key this database's keys are under (during a master key rotation, the previous one too), and run this again`,
  });
}

/**
 * An audit key made under a master key that is not this database's would lock everyone else out of the trail: on a
 * database that already has keys, the configured master key must be one of theirs.
 */
async function refuseForeignMasterKey(pool: pg.Pool, provider: KeyProvider, signal?: AbortSignal): Promise<void> {
  const current = await provider.currentMasterKeyId(signal);
  const known = (
    await classified(
      masqQueries(pool)
        .selectFrom("masq.data_keys")
        .select("master_key_id as id")
        .union((db) =>
          db
            .selectFrom("masq.pseudonym_keys")
            .select("master_key_id as id")
            .where("master_key_id", "is not", null)
            .where("state", "<>", "retired")
            .$narrowType<{ id: string }>(),
        )
        .execute(),
    )
  ).map((r) => r.id);
  if (known.length > 0 && !known.includes(current)) {
    throw new ConfigError(
      provider.name === "kms" ? "MASQ_KMS_KEY_ID" : "MASQ_MASTER_KEY",
      `names master key ${current}, but this database's keys are under ${known.join(", ")}; the audit key is made under the database's master key`,
    );
  }
}

async function readKey(db: pg.Pool | pg.PoolClient): Promise<KeyRow | undefined> {
  return (
    await classified(
      sql<KeyRow>`SELECT k.version, k.master_key_id, k.wrapped, k.fingerprint,
              (SELECT a.chain_start::text FROM masq.audit_keys a WHERE a.version = k.version) AS chain_start
       FROM masq.audit_key() k`.execute(masqQueries(db)),
    )
  ).rows[0];
}

/**
 * How the lifecycle commands (subject export and erase) name a user in the audit trail: a keyed fingerprint, never
 * the id, so that the record of an erasure does not itself keep what was erased. Keyed with the audit key, which only
 * a holder of the master key can unwrap: someone who can read the trail cannot test guesses of user ids against it,
 * while an auditor with masq's keys can answer "was this user erased, and when?" (`masq audit list --user-id`).
 * The version prefix names the audit key, so a fingerprint stays checkable if that key is ever replaced.
 */
export function subjectFingerprint(key: Pick<AuditKey, "version" | "key">, userId: string): string {
  const mac = createHmac("sha256", key.key).update("masq subject\0").update(userId, "utf8").digest("hex");
  return `v${key.version}:${mac.slice(0, 32)}`;
}
