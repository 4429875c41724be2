import type { KeyConfig } from "../settings/config.ts";
import { describeError, TransientError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { retryTransient } from "../ingest/backoff.ts";
import type { Db } from "../sink/db.ts";
import { IngestKeys } from "../ingest/ingest-keys.ts";
import type { KeyProvider } from "../vault/key-provider.ts";

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
