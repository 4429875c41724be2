/**
 * The data keys unwrapped for reading the vault (unmask, export, check, rotations). Apart from data-keys.ts, which
 * `masq run` loads at start: these go through kysely without run loading it.
 */
import { sql } from "kysely";
import type pg from "pg";
import type { PgTarget } from "../db/connection.ts";
import { classified } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";
import { FatalError } from "../errors.ts";
import type { KeyProvider } from "./key-provider.ts";

/**
 * The data keys with these ids, unwrapped (one provider call per distinct key); the caller zeroes them. Through
 * masq.wrapped_data_keys, which only masq_unmask (and the owner) may execute.
 */
export async function unwrapDataKeys(
  pool: pg.Pool,
  provider: KeyProvider,
  ids: Iterable<string>,
  signal?: AbortSignal,
  target?: PgTarget,
): Promise<Map<string, Uint8Array>> {
  const wanted = [...new Set(ids)];
  const out = new Map<string, Uint8Array>();
  if (wanted.length === 0) return out;
  // Postgres's errors name the database as the caller knows it (masq check names the setting and the server it reached).
  const { rows } = await classified(
    sql<{ id: string; master_key_id: string; wrapped: Buffer }>`SELECT id, master_key_id, wrapped FROM masq.wrapped_data_keys(${wanted}::uuid[])`.execute(masqQueries(pool)),
    target,
  );
  for (const r of rows) out.set(r.id, await provider.unwrap(r.wrapped, r.master_key_id, { purpose: "vault", keyId: r.id }, signal));
  return out;
}

/**
 * The data keys a rotation has unwrapped so far, kept for its whole run: the vault holds few data keys and many
 * values per key, so each is unwrapped once (one provider call) rather than once per batch. Zeroed on close.
 */
export class OpenedDataKeys {
  private readonly keys = new Map<string, Uint8Array>();
  private readonly pool: pg.Pool;
  private readonly provider: KeyProvider;

  constructor(pool: pg.Pool, provider: KeyProvider) {
    this.pool = pool;
    this.provider = provider;
  }

  /** The keys with these ids; a missing one is a broken invariant (a ciphertext whose data key is gone). */
  async get(ids: Iterable<string>, signal?: AbortSignal): Promise<ReadonlyMap<string, Uint8Array>> {
    const missing = [...new Set(ids)].filter((id) => !this.keys.has(id));
    if (missing.length > 0) {
      const loaded = await unwrapDataKeys(this.pool, this.provider, missing, signal);
      for (const [id, key] of loaded) this.keys.set(id, key);
      const lost = missing.filter((id) => !this.keys.has(id));
      if (lost.length > 0) throw new FatalError(`data key(s) ${lost.join(", ")} are referenced but not in masq.data_keys`);
    }
    return this.keys;
  }

  close(): void {
    for (const k of this.keys.values()) k.fill(0);
    this.keys.clear();
  }
}
