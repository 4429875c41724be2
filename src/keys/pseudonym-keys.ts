import type pg from "pg";
// Statements on pg, not kysely: `masq run` imports this file at start (the active key) and must not load
// kysely there (about 0.2 s; test/unit/start-up-imports.test.ts).
import { createHmac } from "node:crypto";
import { classifyPgError, query } from "../db/query.ts";
import { ConfigError, FatalError } from "../errors.ts";
import { createPseudonymizer, type Pseudonymizer } from "../ingest/pseudonymize.ts";
import type { KeyProvider } from "./key-provider.ts";

/** The pseudonym key ingestion writes with. */
export interface PseudonymKey {
  version: number;
  pseudonymizer: Pseudonymizer;
  /** The key itself, for a prepare thread to make its own pseudonymizer from (ingest/prepare-threads.ts). Never logged. */
  key: Uint8Array;
}

/** A public name for a pseudonym key: 16 hex digits of HMAC-SHA256(key, "masq pseudonym key fingerprint"). */
export function pseudonymKeyFingerprint(key: Uint8Array): string {
  return createHmac("sha256", key).update("masq pseudonym key fingerprint").digest("hex").slice(0, 16);
}

export function pseudonymKeyContext(version: number): { purpose: "pseudonym"; keyId: string } {
  return { purpose: "pseudonym", keyId: `v${version}` };
}

interface KeyRow {
  version: number;
  state: "active" | "retiring" | "retired";
  provider: "kms" | "local" | "external";
  master_key_id: string | null;
  wrapped: Buffer | null;
  fingerprint: string;
}

/**
 * The active pseudonym key, created on first run: 32 bytes from the provider, stored wrapped as version 1. With
 * MASQ_PSEUDONYM_KEY (an explicit override) the key is the one given, and only its fingerprint is stored; a process
 * started with a key other than the database's active one is refused, since its pseudonyms would match nothing.
 */
export async function activePseudonymKey(pool: pg.Pool, provider: KeyProvider, override?: Uint8Array, signal?: AbortSignal): Promise<PseudonymKey> {
  let row = await readActive(pool);
  if (row === undefined) row = await createFirst(pool, provider, override, signal);
  return unwrapPseudonymKey(row, provider, override, signal);
}

/**
 * Any version still usable (active or retiring): for rotation, which reads under the old key and writes under the
 * new, and for the check every reveal makes that a value is its pseudonym's. `override` (MASQ_PSEUDONYM_KEY) is
 * used for the version it is the key of.
 */
export async function pseudonymKeyVersion(pool: pg.Pool, provider: KeyProvider, version: number, signal?: AbortSignal, override?: Uint8Array): Promise<PseudonymKey> {
  const { rows } = await query<KeyRow>(pool, `SELECT ${KEY_COLUMNS} FROM masq.pseudonym_keys WHERE version = $1`, [version]);
  const row = rows[0];
  if (row === undefined || row.state === "retired") throw new FatalError(`pseudonym key version ${version} does not exist or was retired`);
  const given = override !== undefined && pseudonymKeyFingerprint(override) === row.fingerprint ? override : undefined;
  return unwrapPseudonymKey(row, provider, given, signal);
}

/**
 * The columns of a key row; the wrapped key itself comes through masq.pseudonym_key_wrapped (no role but the owner
 * reads masq.pseudonym_keys.wrapped directly).
 */
const KEY_COLUMNS = "version, state, provider, master_key_id, masq.pseudonym_key_wrapped(version) AS wrapped, fingerprint";

async function unwrapPseudonymKey(row: KeyRow, provider: KeyProvider, override: Uint8Array | undefined, signal?: AbortSignal): Promise<PseudonymKey> {
  if (override !== undefined) {
    if (pseudonymKeyFingerprint(override) !== row.fingerprint) {
      throw new ConfigError(
        "MASQ_PSEUDONYM_KEY",
        `is not the pseudonym key this database is written with (version ${row.version}, fingerprint ${row.fingerprint}); ` +
          "unset it to use the key masq keeps in the database, or give the right one",
      );
    }
    return { version: row.version, pseudonymizer: createPseudonymizer(override), key: override };
  }
  if (row.provider === "external" || row.wrapped === null || row.master_key_id === null) {
    throw new ConfigError(
      "MASQ_PSEUDONYM_KEY",
      `is not set, but pseudonym key version ${row.version} (fingerprint ${row.fingerprint}) was given from outside and is not stored; set MASQ_PSEUDONYM_KEY to it`,
    );
  }
  const key = await provider.unwrap(row.wrapped, row.master_key_id, pseudonymKeyContext(row.version), signal);
  if (pseudonymKeyFingerprint(key) !== row.fingerprint) throw new FatalError(`pseudonym key version ${row.version} unwrapped to a key with the wrong fingerprint`);
  return { version: row.version, pseudonymizer: createPseudonymizer(key), key };
}

async function readActive(pool: pg.Pool): Promise<KeyRow | undefined> {
  const { rows } = await query<KeyRow>(pool, `SELECT ${KEY_COLUMNS} FROM masq.pseudonym_keys WHERE state = 'active'`);
  return rows[0];
}

/** Under an advisory lock, so that replicas starting together on a fresh database agree on one key. */
async function createFirst(pool: pg.Pool, provider: KeyProvider, override: Uint8Array | undefined, signal?: AbortSignal): Promise<KeyRow> {
  const client = await pool.connect();
  try {
    await client.query("SELECT pg_advisory_lock(hashtext('masq.pseudonym_keys'))");
    try {
      const again = await client.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM masq.pseudonym_keys WHERE state = 'active'`);
      if (again.rows[0] !== undefined) return again.rows[0];
      const any = await client.query("SELECT 1 FROM masq.pseudonym_keys LIMIT 1");
      if ((any.rowCount ?? 0) > 0) throw new FatalError("masq.pseudonym_keys has no active key (an interrupted rotation?); run `masq rotate pseudonym-key --resume`");
      let row: KeyRow;
      if (override !== undefined) {
        row = { version: 1, state: "active", provider: "external", master_key_id: null, wrapped: null, fingerprint: pseudonymKeyFingerprint(override) };
      } else {
        // A database that masq wrote before it kept its own key (MASQ_PSEUDONYM_KEY was required then): a new key
        // would silently give every value a second pseudonym, breaking duplicate detection across the boundary.
        const written = await client.query("SELECT 1 FROM masq.ingest_ledger LIMIT 1");
        if ((written.rowCount ?? 0) > 0) {
          throw new ConfigError(
            "MASQ_PSEUDONYM_KEY",
            "is not set, and this database already holds messages masked under a key masq does not keep; set MASQ_PSEUDONYM_KEY to that key",
          );
        }
        const g = await provider.generateKey(pseudonymKeyContext(1), signal);
        row = { version: 1, state: "active", provider: provider.name, master_key_id: g.masterKeyId, wrapped: Buffer.from(g.wrapped), fingerprint: pseudonymKeyFingerprint(g.plaintext) };
        g.plaintext.fill(0);
      }
      // Through the narrow function: the ingest role can create version 1 on an empty table, nothing else.
      const made = await client.query<{ ok: boolean }>("SELECT masq.create_first_pseudonym_key($1, $2, $3, $4) AS ok", [
        row.provider,
        row.master_key_id,
        row.wrapped,
        row.fingerprint,
      ]);
      if (made.rows[0]?.ok !== true) throw new FatalError("masq.pseudonym_keys gained a key while masq created the first one; start masq again");
      return row;
    } finally {
      await client.query("SELECT pg_advisory_unlock(hashtext('masq.pseudonym_keys'))");
    }
  } catch (err) {
    throw err instanceof ConfigError || err instanceof FatalError ? err : classifyPgError(err);
  } finally {
    client.release();
  }
}
