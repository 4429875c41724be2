import type pg from "pg";
import { FatalError } from "../errors.ts";
import { classifyPgError } from "../sink/pg-errors.ts";
import { loadDataKeys } from "../vault/data-keys.ts";
import type { KeyProvider } from "../vault/key-provider.ts";

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

/** The data keys with these ids, unwrapped (one provider call each); the caller zeroes them. */
export async function unwrapDataKeys(pool: pg.Pool, provider: KeyProvider, ids: string[], signal?: AbortSignal): Promise<Map<string, Uint8Array>> {
  try {
    return await loadDataKeys(pool, provider, ids, signal);
  } catch (err) {
    // Postgres errors come raw from loadDataKeys; the provider's are classified already (ConfigError included).
    throw typeof (err as { code?: unknown }).code === "string" ? classifyPgError(err) : err;
  }
}
