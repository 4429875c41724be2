import { availableParallelism } from "node:os";
import type { TableName } from "../db/tables.ts";
import { ConfigError } from "../errors.ts";
import { loadConfigFile } from "./config-file.ts";
import { lookup, read, type Sources } from "./sources.ts";
import { DEFAULT_HTTP_PORT, SETTINGS as S, type LogFormat, type LogLevel, type SqsProtocolSetting } from "./spec.ts";

export { DEFAULT_HTTP_PORT, type LogFormat, type LogLevel, type SqsProtocol, type SqsProtocolSetting } from "./spec.ts";
export type { Sources } from "./sources.ts";

/**
 * What a command reads its settings from: its flags, the environment, and the config file that --config or
 * MASQ_CONFIG names, loaded and checked whole here (a mistake in it exits 2 before anything is touched).
 */
export function settingSources(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): Sources {
  const named = lookup(S.config, { flags, env });
  return { flags, env, file: named === undefined ? undefined : loadConfigFile(read(S.config, { flags, env })!, named.from) };
}

/**
 * Settings are read once at start-up: flags over environment over a config file over defaults (sources.ts,
 * config-file.ts), each parsed and checked by its declaration (spec.ts). What is left here is what one setting alone does not say: defaults that follow from
 * other settings, fallbacks from one setting to another, and checks across settings. Every error names the setting
 * and exits 2 before anything is touched; secret values never appear in a message.
 */

export interface PipelineConfig {
  batchSize: number;
  batchWaitMs: number;
  receivers: number;
  maxInFlight: number;
  /** MASQ_MAX_IN_FLIGHT_BYTES: bodies held (received, not yet deleted), in bytes of UTF-8; see runner.ts. */
  maxInFlightBytes: number;
  writers: number;
  /** MASQ_PREPARE_THREADS: worker threads that mask and seal batches; 0 (or absent) prepares on the main thread. */
  prepareThreads?: number | undefined;
  waitTimeSeconds: number;
  visibilityTimeoutSeconds: number;
  shutdownTimeoutMs: number;
  /** A drain gives up after this long of failing to reach SQS or Postgres (MASQ_CONNECT_TIMEOUT_SECONDS); the service never. */
  giveUpAfterMs?: number | undefined;
}

export interface RunConfig {
  queueUrl: string;
  databaseUrl: string | undefined;
  table: TableName;
  keys: KeyConfig;
  /** MASQ_PSEUDONYM_KEY(_FILE): an explicit pseudonym key instead of the one masq keeps wrapped in the database. */
  pseudonymKeyOverride: Uint8Array | undefined;
  sqsProtocol: SqsProtocolSetting;
  sqsEndpoint: string | undefined;
  region: string;
  migrate: boolean;
  logLevel: LogLevel;
  pipeline: PipelineConfig;
  /** The /metrics, /healthz, /readyz listener; undefined when off. */
  http: { port: number; host: string } | undefined;
}

export function readLogLevel(src: Sources): LogLevel {
  return read(S.logLevel, src);
}

/** MASQ_LOG_FORMAT: json or pretty; unset, "auto" (pretty on a terminal, JSON lines elsewhere). */
export function readLogFormat(src: Sources): LogFormat | "auto" {
  return read(S.logFormat, src);
}

/** DATABASE_URL: any connection string psql accepts (connection-string.ts); unset, pg reads the PG* variables. */
export function readDatabaseUrl(src: Sources): string | undefined {
  return read(S.databaseUrl, src);
}

/** The setting that names the database, for errors: --database-url, DATABASE_URL, or the PG* variables. */
export function databaseSetting(src: Sources): string {
  return lookup(S.databaseUrl, src)?.from ?? "PGHOST/PGPORT";
}

/**
 * MASQ_CONNECT_TIMEOUT_SECONDS: how long a one-shot command (everything but `masq run` without --drain) waits for
 * an unreachable SQS, Postgres or KMS before it gives up, naming what it could not reach.
 */
export function readConnectTimeoutMs(src: Sources): number {
  return read(S.connectTimeoutSeconds, src) * 1000;
}

/** MASQ_VAULT_RETENTION_DAYS: how many days of data stay recoverable (docs/operations.md, "Retention"); unset, forever. */
export function readRetentionDays(src: Sources): number | undefined {
  return read(S.retentionDays, src);
}

export function readTable(src: Sources): TableName {
  return read(S.table, src);
}

/**
 * The table a command names itself (--table or MASQ_TABLE), or undefined when none is given: `subject export` and
 * `subject erase` then act on every table masq writes, not on the default one.
 */
export function readNamedTable(src: Sources): TableName | undefined {
  return lookup(S.table, src) === undefined ? undefined : readTable(src);
}

/** MASQ_CONTRACT or --contract: a contract file's path; undefined for the login contract shipped with masq. */
export function readContractFile(src: Sources): string | undefined {
  return read(S.contract, src);
}

/** MASQ_PSEUDONYM_KEY or MASQ_PSEUDONYM_KEY_FILE; undefined when neither is set (masq then manages the key). */
export function readPseudonymKey(src: Sources): Uint8Array | undefined {
  return read(S.pseudonymKey, src) ?? read(S.pseudonymKeyFile, src);
}

/** Data key limits: a data key is replaced after this long or this many encryptions, whichever comes first. */
export interface DataKeyLimitsConfig {
  maxAgeMs: number;
  maxUses: number;
}

export type KeyConfig = { limits: DataKeyLimitsConfig } & (
  | { provider: "kms"; kmsKeyId: string; region: string; kmsEndpoint: string | undefined; stsEndpoint: string | undefined }
  | { provider: "local"; masterKey: Uint8Array; previousMasterKeys: Uint8Array[] }
);

/** Whether a master key is configured at all (MASQ_KMS_KEY_ID, MASQ_MASTER_KEY or MASQ_MASTER_KEY_FILE), valid or not. */
export function hasMasterKey(src: Sources): boolean {
  return [S.kmsKeyId, S.masterKey, S.masterKeyFile].some((s) => lookup(s, src) !== undefined);
}

/**
 * The master key's provider. MASQ_KEY_PROVIDER says which (kms or local); left unset, it follows from which key is
 * configured (MASQ_KMS_KEY_ID, or MASQ_MASTER_KEY / MASQ_MASTER_KEY_FILE).
 */
export function readKeyConfig(src: Sources): KeyConfig {
  const limits: DataKeyLimitsConfig = { maxAgeMs: read(S.dataKeyMaxAge, src) * 1000, maxUses: read(S.dataKeyMaxUses, src) };
  const hasKms = lookup(S.kmsKeyId, src) !== undefined;
  const hasLocal = lookup(S.masterKey, src) !== undefined || lookup(S.masterKeyFile, src) !== undefined;
  const chosen = read(S.keyProvider, src);
  if (hasKms && hasLocal && chosen === undefined) {
    throw new ConfigError(S.keyProvider.env, "both MASQ_KMS_KEY_ID and MASQ_MASTER_KEY are set; say which provider to use (kms or local)");
  }
  const provider = chosen ?? (hasKms ? "kms" : hasLocal ? "local" : undefined);
  if (provider === "kms") {
    const kmsKeyId = read(S.kmsKeyId, src);
    if (kmsKeyId === undefined) throw new ConfigError(S.kmsKeyId.env, "is not set; give the KMS key (key id, key ARN or alias/…) that wraps masq's keys");
    const awsEndpoint = () => read(S.awsEndpoint, src);
    return { provider, kmsKeyId, region: readRegion(src), kmsEndpoint: read(S.kmsEndpoint, src) ?? awsEndpoint(), stsEndpoint: read(S.stsEndpoint, src) ?? awsEndpoint(), limits };
  }
  if (provider === "local") {
    const masterKey = read(S.masterKey, src) ?? read(S.masterKeyFile, src);
    if (masterKey === undefined) throw new ConfigError(S.masterKey.env, "is not set; the local key provider needs a 256-bit master key, e.g. from: openssl rand -hex 32");
    return { provider, masterKey, previousMasterKeys: read(S.previousMasterKeys, src), limits };
  }
  // Name what is missing, not MASQ_KEY_PROVIDER: nobody has to set that when one key is given.
  throw new ConfigError(
    S.masterKey.env,
    "none is set; set MASQ_KMS_KEY_ID (AWS KMS) or MASQ_MASTER_KEY (the local provider, 32 bytes hex, e.g. from: openssl rand -hex 32; or MASQ_MASTER_KEY_FILE)",
    { what: "no master key", object: "MASQ_KMS_KEY_ID or MASQ_MASTER_KEY" },
  );
}

/**
 * MASQ_MAX_IN_FLIGHT_BYTES unset: 32 MiB, or room for every receiver's receive at once when that is more. A receive
 * reserves ten bodies of up to 256 KiB (runner.ts), so 32 MiB lets 12 poll; more receivers, set for a distant SQS,
 * would otherwise wait for each other's answers (docs/benchmark.md, 20 ms latency at 16 and 32 receivers). The 8 MiB
 * beyond the reservations is for bodies held meanwhile.
 */
export function defaultMaxInFlightBytes(receivers: number): number {
  return Math.max(32 * 1024 * 1024, receivers * 10 * 256 * 1024 + 8 * 1024 * 1024);
}

export function readPipelineConfig(src: Sources, drain = false): PipelineConfig {
  const visibilityTimeoutSeconds = read(S.visibilityTimeout, src);
  const batchSize = read(S.batchSize, src);
  const writers = read(S.writers, src);
  const config: PipelineConfig = {
    batchSize,
    batchWaitMs: read(S.batchWaitMs, src),
    receivers: read(S.receivers, src),
    maxInFlight: read(S.maxInFlight, src) ?? Math.max(5000, batchSize * 3),
    maxInFlightBytes: read(S.maxInFlightBytes, src) ?? defaultMaxInFlightBytes(read(S.receivers, src)),
    writers,
    // One thread per core the main thread and the SQS thread leave, and no more than batches are prepared at once. On
    // two cores that is none: with the SQS calls on a thread of their own, the main thread has the time to prepare,
    // and a third isolate cost about 40 MB of RSS for no throughput (docs/benchmark.md, 2026-12-06).
    prepareThreads: read(S.prepareThreads, src) ?? Math.max(0, Math.min(availableParallelism() - 2, writers)),
    // A drain wants to notice an empty queue quickly; a service wants cheap, long polls.
    waitTimeSeconds: read(S.waitTimeSeconds, src) ?? (drain ? 1 : 20),
    visibilityTimeoutSeconds,
    shutdownTimeoutMs: read(S.shutdownTimeoutMs, src),
  };
  if (config.maxInFlight < config.batchSize) {
    const from = lookup(S.maxInFlight, src)?.from ?? S.maxInFlight.env;
    throw new ConfigError(from, `must be at least the batch size (${config.batchSize}), or no batch could ever fill`);
  }
  return config;
}

/** The queue part of the settings, for commands where the queue is optional (`status`). */
export function readQueueSettings(src: Sources): { queueUrl: string; endpoint: string | undefined; protocol: SqsProtocolSetting; region: string } | undefined {
  const queueUrl = read(S.queueUrl, src);
  if (queueUrl === undefined) return undefined;
  return {
    queueUrl,
    endpoint: read(S.sqsEndpoint, src) ?? read(S.awsEndpoint, src) ?? emulatorEndpoint(queueUrl),
    protocol: read(S.sqsProtocol, src),
    region: readRegion(src),
  };
}

/**
 * "QUEUE_URL at localhost:4566" or "AWS_ENDPOINT_URL_SQS at …": the setting that decides where SQS requests go and
 * its host:port, for errors and "waiting" lines. On AWS (no endpoint set) the region's endpoint.
 */
export function sqsTargetText(src: Sources): string {
  const chosen = lookup(S.sqsEndpoint, src) ?? lookup(S.awsEndpoint, src) ?? lookup(S.queueUrl, src);
  if (chosen === undefined) return S.queueUrl.env;
  try {
    const u = new URL(chosen.text);
    return `${chosen.from} at ${u.hostname}:${u.port || (u.protocol === "https:" ? "443" : "80")}`;
  } catch {
    return chosen.from;
  }
}

export function readRunConfig(src: Sources, drain: boolean): RunConfig {
  const { config, errors } = readRunSettings(src, drain);
  if (errors[0] !== undefined) throw errors[0];
  return config as RunConfig;
}

/**
 * run's settings, each part read on its own so that one mistake does not hide the next: `masq check` reports every
 * error, as a linter does, and runs the checks whose settings could be read. A part is present in `config` only
 * when it was read without error (databaseUrl and pseudonymKeyOverride may be present and undefined).
 */
export function readRunSettings(src: Sources, drain: boolean): { config: Partial<RunConfig>; errors: ConfigError[] } {
  const config: Partial<RunConfig> = {};
  const errors: ConfigError[] = [];
  const part = (readPart: () => void) => {
    try {
      readPart();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      errors.push(err);
    }
  };
  part(() => {
    const queue = readQueueSettings(src);
    if (queue === undefined) throw new ConfigError(S.queueUrl.env, "is not set; give the queue's URL with --queue-url or QUEUE_URL");
    Object.assign(config, { queueUrl: queue.queueUrl, sqsProtocol: queue.protocol, sqsEndpoint: queue.endpoint, region: queue.region });
  });
  part(() => (config.databaseUrl = readDatabaseUrl(src)));
  part(() => (config.table = readTable(src)));
  part(() => (config.keys = readKeyConfig(src)));
  part(() => (config.pseudonymKeyOverride = readPseudonymKey(src)));
  part(() => (config.migrate = readMigrate(src)));
  part(() => (config.logLevel = readLogLevel(src)));
  part(() => (config.pipeline = readPipelineConfig(src, drain)));
  // A drain is a one-shot job: no listener unless asked for (MASQ_HTTP_PORT or --http-port).
  part(() => (config.http = readHttp(src, drain ? undefined : DEFAULT_HTTP_PORT)));
  return { config, errors };
}

/** MASQ_MIGRATE, or --no-migrate: whether pending migrations are applied at start. */
export function readMigrate(src: Sources): boolean {
  return read(S.migrate, src);
}

/** The Lambda handler's settings (the environment only): what `run` reads, less the queue, threads and listener. */
export interface LambdaConfig {
  logLevel: LogLevel;
  databaseUrl: string | undefined;
  table: TableName;
  keys: KeyConfig;
  pseudonymKeyOverride: Uint8Array | undefined;
  batchSize: number;
  migrate: boolean;
  /** MASQ_CONTRACT: a contract file packaged with the function; undefined for the login path. */
  contract: string | undefined;
}

/**
 * A function's settings are its environment variables: no config file, which the Lambda bundle (esbuild, which does
 * not follow the YAML reader's lazy require) could not read anyway. MASQ_CONFIG there is refused, not ignored.
 */
export function readLambdaConfig(env: NodeJS.ProcessEnv): LambdaConfig {
  const src: Sources = { flags: {}, env };
  if (lookup(S.config, src) !== undefined) throw new ConfigError(S.config.env, "is not read by the Lambda handler; set each setting as an environment variable of the function");
  return {
    logLevel: readLogLevel(src),
    databaseUrl: readDatabaseUrl(src),
    table: readTable(src),
    keys: readKeyConfig(src),
    pseudonymKeyOverride: readPseudonymKey(src),
    batchSize: readPipelineConfig(src).batchSize,
    migrate: readMigrate(src),
    contract: readContractFile(src),
  };
}

/** AWS_REGION (or AWS_DEFAULT_REGION), default us-east-1: refused here, once, rather than by the SDK at every call. */
export function readRegion(src: Sources): string {
  return read(S.region, src);
}

/** MASQ_HTTP_PORT: a port (0 picks a free one), or "off". MASQ_HTTP_HOST: an IP address or a host name. */
export function readHttp(src: Sources, defaultPort: number | undefined): { port: number; host: string } | undefined {
  const host = read(S.httpHost, src);
  const port = read(S.httpPort, src) ?? defaultPort;
  return port === undefined || port === "off" ? undefined : { port, host };
}

/**
 * The fixed port `masq top` watches on 127.0.0.1: MASQ_HTTP_PORT when it names one, else undefined (unset, 0 for
 * any free port, or off), with the setting that gave it for the line that says it cannot be reached.
 */
export function readWatchedPort(src: Sources): { port: number; setting: string } | undefined {
  const port = read(S.httpPort, src);
  return port === undefined || port === "off" || port === 0 ? undefined : { port, setting: lookup(S.httpPort, src)!.from };
}

/**
 * A queue URL that is not on amazonaws.com (LocalStack's http://localhost:4566/000000000000/login-queue, say)
 * names its own endpoint; on AWS the SDK resolves the endpoint from the region.
 */
function emulatorEndpoint(queueUrl: string): string | undefined {
  const u = new URL(queueUrl);
  return /(^|\.)amazonaws\.com(\.cn)?$/.test(u.hostname) ? undefined : u.origin;
}
