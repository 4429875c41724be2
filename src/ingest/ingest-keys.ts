import type pg from "pg";
import { DataKeys, type DataKeyLimits } from "../vault/data-keys.ts";
import type { KeyProvider } from "../vault/key-provider.ts";
import { activePseudonymKey, type PseudonymKey } from "../vault/pseudonym-keys.ts";
import { VaultSealer } from "./vault-sealer.ts";

/**
 * What ingestion needs of the key hierarchy: the active pseudonym key, and a sealer that encrypts originals for the
 * vault with the current data key. Opened once per process; `refresh` follows a rotation to the new pseudonym key.
 */
export class IngestKeys {
  pseudonym: PseudonymKey;
  readonly sealer: VaultSealer;
  readonly dataKeys: DataKeys;
  private readonly pool: pg.Pool;
  private readonly provider: KeyProvider;
  private readonly override: Uint8Array | undefined;
  private readonly onSwitched: ((from: number, to: number) => void) | undefined;
  private refreshing: Promise<PseudonymKey> | undefined;

  private constructor(opts: IngestKeysOptions, pseudonym: PseudonymKey) {
    this.pool = opts.pool;
    this.provider = opts.provider;
    this.override = opts.pseudonymKeyOverride;
    this.onSwitched = opts.onPseudonymKeySwitched;
    this.pseudonym = pseudonym;
    this.dataKeys = new DataKeys({
      pool: opts.pool,
      provider: opts.provider,
      ...(opts.limits ? { limits: opts.limits } : {}),
      ...(opts.onDataKey ? { onGenerated: opts.onDataKey } : {}),
    });
    this.sealer = new VaultSealer(this.dataKeys);
  }

  /** Checks the master key, then loads (on first run, creates) the active pseudonym key: fails fast on either. */
  static async open(opts: IngestKeysOptions, signal?: AbortSignal): Promise<IngestKeys> {
    await opts.provider.currentMasterKeyId(signal);
    return new IngestKeys(opts, await activePseudonymKey(opts.pool, opts.provider, opts.pseudonymKeyOverride, signal));
  }

  /** Loads the active pseudonym key again; writers that meet a key switch together share one load (one unwrap). */
  refresh(signal?: AbortSignal): Promise<PseudonymKey> {
    this.refreshing ??= activePseudonymKey(this.pool, this.provider, this.override, signal)
      .then((key) => {
        const from = this.pseudonym.version;
        this.pseudonym = key;
        if (key.version !== from) this.onSwitched?.(from, key.version);
        return key;
      })
      .finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  close(): void {
    this.dataKeys.close();
  }
}

export interface IngestKeysOptions {
  pool: pg.Pool;
  provider: KeyProvider;
  /** MASQ_PSEUDONYM_KEY, when given. */
  pseudonymKeyOverride?: Uint8Array | undefined;
  limits?: DataKeyLimits | undefined;
  onDataKey?: ((id: string) => void) | undefined;
  /** A rotation switched the active pseudonym key, and this process now writes under `to`. */
  onPseudonymKeySwitched?: ((from: number, to: number) => void) | undefined;
}
