import { createHmac } from "node:crypto";
import type pg from "pg";
import { ConfigError, FatalError } from "../errors.ts";
import { classifyPgError } from "../sink/pg-errors.ts";
import type { KeyProvider } from "../vault/key-provider.ts";

/** The key behind the audit trail's MACs, unwrapped: only a holder of the master key has it, never the database. */
export interface AuditKey {
  version: number;
  key: Uint8Array;
}

interface KeyRow {
  version: number;
  master_key_id: string;
  wrapped: Buffer;
  fingerprint: string;
}

export function auditKeyFingerprint(key: Uint8Array): string {
  return createHmac("sha256", key).update("masq audit key fingerprint").digest("hex").slice(0, 16);
}

const context = (version: number) => ({ purpose: "audit" as const, keyId: `audit-v${version}` });

/**
 * Unwraps the audit key (masq.audit_key(), masq_unmask or the owner); the first audited action of a database makes
 * it (32 bytes from the provider, stored wrapped through masq.create_audit_key, which keeps the first of two
 * racing creators). With KMS this is a Decrypt (or, once, a GenerateDataKey) with encryption context purpose=audit.
 */
export async function openAuditKey(db: pg.Pool | pg.PoolClient, provider: KeyProvider, signal?: AbortSignal): Promise<AuditKey> {
  let row = await readKey(db);
  if (row === undefined) {
    await createAuditKey(db, provider, signal);
    row = await readKey(db);
    if (row === undefined) throw new FatalError("masq.audit_keys holds no audit key after creating one");
  }
  return unwrapAuditKey(row, provider, signal);
}

/** The audit key if the database has one (for verifying, which never makes one); undefined before the first audited action. */
export async function existingAuditKey(db: pg.Pool | pg.PoolClient, provider: KeyProvider, signal?: AbortSignal): Promise<AuditKey | undefined> {
  const row = await readKey(db);
  return row === undefined ? undefined : unwrapAuditKey(row, provider, signal);
}

async function createAuditKey(db: pg.Pool | pg.PoolClient, provider: KeyProvider, signal?: AbortSignal): Promise<void> {
  await refuseForeignMasterKey(db, provider, signal);
  const g = await provider.generateKey(context(1), signal);
  try {
    await db.query("SELECT masq.create_audit_key($1, $2, $3, $4)", [provider.name, g.masterKeyId, Buffer.from(g.wrapped), auditKeyFingerprint(g.plaintext)]);
  } catch (err) {
    throw classifyPgError(err);
  } finally {
    g.plaintext.fill(0);
  }
}

async function unwrapAuditKey(row: KeyRow, provider: KeyProvider, signal?: AbortSignal): Promise<AuditKey> {
  const key = await provider.unwrap(row.wrapped, row.master_key_id, context(row.version), signal);
  if (auditKeyFingerprint(key) !== row.fingerprint) {
    key.fill(0);
    throw new FatalError(`audit key version ${row.version} unwrapped to a key with the wrong fingerprint`);
  }
  return { version: row.version, key };
}

/**
 * An audit key made under a master key that is not this database's would lock everyone else out of the trail: on a
 * database that already has keys, the configured master key must be one of theirs.
 */
async function refuseForeignMasterKey(db: pg.Pool | pg.PoolClient, provider: KeyProvider, signal?: AbortSignal): Promise<void> {
  const current = await provider.currentMasterKeyId(signal);
  let known: string[];
  try {
    known = (
      await db.query<{ id: string }>(
        "SELECT master_key_id AS id FROM masq.data_keys UNION SELECT master_key_id FROM masq.pseudonym_keys WHERE master_key_id IS NOT NULL AND state <> 'retired'",
      )
    ).rows.map((r) => r.id);
  } catch (err) {
    throw classifyPgError(err);
  }
  if (known.length > 0 && !known.includes(current)) {
    throw new ConfigError(
      provider.name === "kms" ? "MASQ_KMS_KEY_ID" : "MASQ_MASTER_KEY",
      `names master key ${current}, but this database's keys are under ${known.join(", ")}; the audit key is made under the database's master key`,
    );
  }
}

async function readKey(db: pg.Pool | pg.PoolClient): Promise<KeyRow | undefined> {
  try {
    return (await db.query<KeyRow>("SELECT version, master_key_id, wrapped, fingerprint FROM masq.audit_key()")).rows[0];
  } catch (err) {
    throw classifyPgError(err);
  }
}
