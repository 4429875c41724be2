/**
 * Ingestion's keys: the active pseudonym key, and the vault sealer with the data keys it encrypts with. Opened once per
 * process (openIngestKeys waits while Postgres or the key provider cannot be reached, and stops at once on a key that
 * does not unwrap); refresh follows a rotation to the new pseudonym key.
 */
import type pg from "pg";
import type { Db } from "../db/pool.ts";
import { describeError, TransientError } from "../errors.ts";
import { retryTransient } from "../ingest/backoff.ts";
import { VaultSealer } from "../ingest/vault-sealer.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../ops/metrics.ts";
import type { KeyConfig } from "../settings/config.ts";
import { DataKeys, type DataKeyLimits } from "./data-keys.ts";
import type { KeyProvider } from "./key-provider.ts";
import { activePseudonymKey, type PseudonymKey } from "./pseudonym-keys.ts";

/**
 * Opens ingestion's keys: checks the master key and loads (or, on first run, creates) the pseudonym key. Waits while
 * Postgres or KMS are unreachable; a key that cannot be unwrapped stops masq at once, naming the setting.
 */
export async function openIngestKeys(opts: {
  db: Db;
  provider: KeyProvider;
  config: KeyConfig;
  override: Uint8Array | undefined;
  logger: Logger;
  metrics?: Metrics | undefined;
  signal?: AbortSignal | undefined;
  /** One-shot commands: give up after this long (MASQ_CONNECT_TIMEOUT_SECONDS). */
  deadlineMs?: number | undefined;
}): Promise<IngestKeys> {
  const { logger } = opts;
  const keys = await retryTransient(
    () =>
      IngestKeys.open(
        {
          pool: opts.db.pool,
          provider: opts.provider,
          pseudonymKeyOverride: opts.override,
          limits: opts.config.limits,
          onDataKey: () => opts.metrics?.dataKeyGenerated(),
          // The version only: a key's material and fingerprint stay out of the log.
          onPseudonymKeySwitched: (from, to) => {
            opts.metrics?.pseudonymKeyInUse(to);
            logger.info({ pseudonymKeyVersion: to, previousVersion: from }, `switched to pseudonym key version ${to}: a rotation made it active`);
          },
        },
        opts.signal,
      ),
    {
      what: "loading the keys",
      isTransient: (e) => e instanceof TransientError,
      deadlineMs: opts.deadlineMs,
      ...(opts.signal ? { signal: opts.signal } : {}),
      onRetry: (err, delay) => logger.warn({ err: describeError(err), retryInMs: Math.round(delay) }, "key provider or Postgres not reachable; waiting"),
    },
  );
  const masterKey = await opts.provider.currentMasterKeyId();
  opts.metrics?.keysInUse(masterKey, keys.pseudonym.version);
  logger.info(
    { keyProvider: opts.provider.name, masterKey, pseudonymKeyVersion: keys.pseudonym.version, pseudonymKeyGiven: opts.override !== undefined },
    "keys loaded",
  );
  return keys;
}

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
