import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { availableParallelism } from "node:os";
import { ConfigError } from "./errors.ts";
import { parseMasterKey, parsePseudonymKey } from "./ingest/pseudonym-key.ts";
import { parseConnectionString } from "./sink/connection-string.ts";
import { parseTableName, type TableName } from "./sink/table-name.ts";

/**
 * Settings are read once at start-up: flags over environment over defaults. Every error names the setting and
 * exits 2 before anything is touched; secret values never appear in a message.
 */
export type SqsProtocol = "json" | "query";
/** MASQ_SQS_PROTOCOL: "auto" (the default) asks the endpoint which one it speaks (source/sqs-protocol.ts). */
export type SqsProtocolSetting = SqsProtocol | "auto";
export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
export type LogFormat = "json" | "pretty";

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

/** Where each setting comes from: the flag commander parsed (camelCase key) and the environment variable. */
interface Source {
  flags: Record<string, unknown>;
  env: NodeJS.ProcessEnv;
}

function raw(src: Source, flag: string | undefined, env: string): { value: string; from: string } | undefined {
  const f = flag === undefined ? undefined : src.flags[flag];
  if (typeof f === "string" || typeof f === "number") {
    if (f !== "") return { value: String(f), from: `--${kebab(flag!)}` };
  }
  const e = src.env[env];
  if (e !== undefined && e !== "") return { value: e, from: env };
  return undefined;
}

function kebab(s: string): string {
  return s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function integer(src: Source, flag: string | undefined, env: string, def: number, min: number, max: number): number {
  const r = raw(src, flag, env);
  if (r === undefined) return def;
  const n = Number(r.value);
  if (!/^-?\d+$/.test(r.value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(r.from, `must be a whole number from ${min} to ${max} (got "${r.value}")`);
  }
  return n;
}

function oneOf<T extends string>(src: Source, flag: string | undefined, env: string, def: T, allowed: readonly T[]): T {
  const r = raw(src, flag, env);
  if (r === undefined) return def;
  const v = r.value.trim().toLowerCase() as T;
  if (!allowed.includes(v)) throw new ConfigError(r.from, `must be one of ${allowed.join(", ")} (got "${r.value}")`);
  return v;
}

function url(src: Source, flag: string | undefined, env: string, what: string, schemes: readonly string[]): string | undefined {
  const r = raw(src, flag, env);
  if (r === undefined) return undefined;
  let protocol: string;
  try {
    protocol = new URL(r.value).protocol.replace(/:$/, "");
  } catch {
    // A database URL can hold a password: name the setting, never echo the value.
    throw new ConfigError(r.from, `is not a valid ${what} URL`);
  }
  if (!schemes.includes(protocol)) throw new ConfigError(r.from, `must be a ${schemes.map((s) => `${s}://`).join(" or ")} URL (got ${protocol}://)`);
  return r.value;
}

const HTTP = ["http", "https"] as const;

export function readLogLevel(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): LogLevel {
  return oneOf<LogLevel>({ flags, env }, "logLevel", "MASQ_LOG_LEVEL", "info", ["fatal", "error", "warn", "info", "debug", "trace", "silent"]);
}

/** MASQ_LOG_FORMAT: json or pretty; unset, "auto" (pretty on a terminal, JSON lines elsewhere). */
export function readLogFormat(env: NodeJS.ProcessEnv): LogFormat | "auto" {
  return oneOf<LogFormat | "auto">({ flags: {}, env }, undefined, "MASQ_LOG_FORMAT", "auto", ["json", "pretty", "auto"]);
}

/** DATABASE_URL: any connection string psql accepts (connection-string.ts); unset, pg reads the PG* variables. */
export function readDatabaseUrl(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): string | undefined {
  const r = raw({ flags, env }, "databaseUrl", "DATABASE_URL");
  if (r === undefined) return undefined;
  try {
    parseConnectionString(r.value);
  } catch (err) {
    // The message names the problem only: the string can hold a password.
    throw new ConfigError(r.from, (err as Error).message);
  }
  return r.value;
}

/** The setting that names the database, for errors: --database-url, DATABASE_URL, or the PG* variables. */
export function databaseSetting(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): string {
  return raw({ flags, env }, "databaseUrl", "DATABASE_URL")?.from ?? "PGHOST/PGPORT";
}

/**
 * MASQ_CONNECT_TIMEOUT_SECONDS: how long a one-shot command (everything but `masq run` without --drain) waits for
 * an unreachable SQS, Postgres or KMS before it gives up, naming what it could not reach.
 */
export function readConnectTimeoutMs(env: NodeJS.ProcessEnv): number {
  return integer({ flags: {}, env }, "-", "MASQ_CONNECT_TIMEOUT_SECONDS", 30, 1, 86_400) * 1000;
}

/** A yes/no setting: true/false, yes/no, on/off, 1/0 in any case; anything else is an error, never a guess. */
function boolean(src: Source, flag: string | undefined, env: string, def: boolean): boolean {
  const f = flag === undefined ? undefined : src.flags[flag];
  if (typeof f === "boolean") return f;
  const r = raw(src, flag, env);
  if (r === undefined) return def;
  const v = r.value.trim().toLowerCase();
  if (["true", "yes", "on", "1"].includes(v)) return true;
  if (["false", "no", "off", "0"].includes(v)) return false;
  throw new ConfigError(r.from, `must be true or false (got "${r.value}")`);
}

/**
 * MASQ_VAULT_RETENTION_DAYS: how many days of data stay recoverable (docs/operations.md, "Retention"); unset, values
 * are kept forever. A whole number of days, 1 to 36500 (the database refuses anything else too).
 */
export function readRetentionDays(env: NodeJS.ProcessEnv): number | undefined {
  const r = raw({ flags: {}, env }, undefined, "MASQ_VAULT_RETENTION_DAYS");
  if (r === undefined) return undefined;
  const n = Number(r.value.trim());
  if (!/^\d+$/.test(r.value.trim()) || !Number.isSafeInteger(n) || n < 1 || n > 36_500) {
    throw new ConfigError(r.from, `must be a positive whole number of days, 1 to 36500 (got "${r.value.slice(0, 40)}"); unset it to keep values forever`);
  }
  return n;
}

export function readTable(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): TableName {
  const r = raw({ flags, env }, "table", "MASQ_TABLE");
  if (r === undefined) return { schema: "public", name: "user_logins" };
  try {
    return parseTableName(r.value);
  } catch (err) {
    throw new ConfigError(r.from, (err as Error).message);
  }
}

/** MASQ_PSEUDONYM_KEY or MASQ_PSEUDONYM_KEY_FILE; undefined when neither is set (masq then manages the key). */
export function readPseudonymKey(env: NodeJS.ProcessEnv): Uint8Array | undefined {
  if (env.MASQ_PSEUDONYM_KEY !== undefined && env.MASQ_PSEUDONYM_KEY !== "") return parsePseudonymKey(env.MASQ_PSEUDONYM_KEY);
  const file = env.MASQ_PSEUDONYM_KEY_FILE;
  if (file !== undefined && file !== "") return parsePseudonymKey(readSecretFile(file, "MASQ_PSEUDONYM_KEY_FILE"), "MASQ_PSEUDONYM_KEY_FILE");
  return undefined;
}

function readSecretFile(file: string, setting: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError(setting, `cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`);
  }
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

/**
 * The master key's provider. MASQ_KEY_PROVIDER says which (kms or local); left unset, it follows from which key is
 * configured (MASQ_KMS_KEY_ID, or MASQ_MASTER_KEY / MASQ_MASTER_KEY_FILE).
 */
export function readKeyConfig(env: NodeJS.ProcessEnv): KeyConfig {
  const src = { flags: {}, env };
  const limits: DataKeyLimitsConfig = {
    maxAgeMs: integer(src, "-", "MASQ_DATA_KEY_MAX_AGE_SECONDS", 3600, 1, 30 * 86_400) * 1000,
    maxUses: integer(src, "-", "MASQ_DATA_KEY_MAX_USES", 1_000_000, 1, 2 ** 32),
  };
  const hasKms = Boolean(env.MASQ_KMS_KEY_ID);
  const hasLocal = Boolean(env.MASQ_MASTER_KEY) || Boolean(env.MASQ_MASTER_KEY_FILE);
  if (hasKms && hasLocal && !env.MASQ_KEY_PROVIDER) {
    throw new ConfigError("MASQ_KEY_PROVIDER", "both MASQ_KMS_KEY_ID and MASQ_MASTER_KEY are set; say which provider to use (kms or local)");
  }
  const provider = oneOf<"kms" | "local" | "">(src, undefined, "MASQ_KEY_PROVIDER", hasKms ? "kms" : hasLocal ? "local" : "", ["kms", "local"]);
  if (provider === "kms") {
    if (!hasKms) throw new ConfigError("MASQ_KMS_KEY_ID", "is not set; give the KMS key (key id, key ARN or alias/…) that wraps masq's keys");
    return {
      provider,
      kmsKeyId: env.MASQ_KMS_KEY_ID!.trim(),
      region: readRegion(env),
      kmsEndpoint: url(src, undefined, "AWS_ENDPOINT_URL_KMS", "KMS endpoint", HTTP) ?? url(src, undefined, "AWS_ENDPOINT_URL", "AWS endpoint", HTTP),
      stsEndpoint: url(src, undefined, "AWS_ENDPOINT_URL_STS", "STS endpoint", HTTP) ?? url(src, undefined, "AWS_ENDPOINT_URL", "AWS endpoint", HTTP),
      limits,
    };
  }
  if (provider === "local") {
    let masterKey: Uint8Array;
    if (env.MASQ_MASTER_KEY) masterKey = parseMasterKey(env.MASQ_MASTER_KEY);
    else if (env.MASQ_MASTER_KEY_FILE) masterKey = parseMasterKey(readSecretFile(env.MASQ_MASTER_KEY_FILE, "MASQ_MASTER_KEY_FILE"), "MASQ_MASTER_KEY_FILE");
    else throw new ConfigError("MASQ_MASTER_KEY", "is not set; the local key provider needs a 256-bit master key, e.g. from: openssl rand -hex 32");
    const previousMasterKeys = (env.MASQ_MASTER_KEY_PREVIOUS ?? "")
      .split(",")
      .map((k) => k.trim())
      .filter(Boolean)
      .map((k) => parseMasterKey(k, "MASQ_MASTER_KEY_PREVIOUS"));
    return { provider, masterKey, previousMasterKeys, limits };
  }
  // Name what is missing, not MASQ_KEY_PROVIDER: nobody has to set that when one key is given.
  throw new ConfigError(
    "MASQ_MASTER_KEY",
    "none is set; set MASQ_KMS_KEY_ID (AWS KMS) or MASQ_MASTER_KEY (the local provider, 32 bytes hex, e.g. from: openssl rand -hex 32; or MASQ_MASTER_KEY_FILE)",
    { what: "no master key", object: "MASQ_KMS_KEY_ID or MASQ_MASTER_KEY" },
  );
}

export function readPipelineConfig(flags: Record<string, unknown>, env: NodeJS.ProcessEnv, drain = false): PipelineConfig {
  const src = { flags, env };
  const visibilityTimeoutSeconds = integer(src, "visibilityTimeout", "MASQ_VISIBILITY_TIMEOUT", 60, 5, 43_200);
  const batchSize = integer(src, "batchSize", "MASQ_BATCH_SIZE", 1000, 1, 10_000);
  const writers = integer(src, "writers", "MASQ_WRITERS", 2, 1, 32);
  const config: PipelineConfig = {
    batchSize,
    batchWaitMs: integer(src, "batchWaitMs", "MASQ_BATCH_WAIT_MS", 100, 0, 60_000),
    receivers: integer(src, "receivers", "MASQ_RECEIVERS", 8, 1, 100),
    maxInFlight: integer(src, "maxInFlight", "MASQ_MAX_IN_FLIGHT", Math.max(5000, batchSize * 3), 10, 1_000_000),
    maxInFlightBytes: integer(src, "maxInFlightBytes", "MASQ_MAX_IN_FLIGHT_BYTES", 32 * 1024 * 1024, 1024 * 1024, 16 * 1024 ** 3),
    writers,
    // One thread per core the main thread leaves (at least one), and no more than batches are prepared at once.
    prepareThreads: integer(src, undefined, "MASQ_PREPARE_THREADS", Math.max(1, Math.min(availableParallelism() - 1, writers)), 0, 32),
    // A drain wants to notice an empty queue quickly; a service wants cheap, long polls.
    waitTimeSeconds: integer(src, "waitTimeSeconds", "MASQ_WAIT_TIME_SECONDS", drain ? 1 : 20, 0, 20),
    visibilityTimeoutSeconds,
    shutdownTimeoutMs: integer(src, "shutdownTimeoutMs", "MASQ_SHUTDOWN_TIMEOUT_MS", 30_000, 1_000, 3_600_000),
  };
  if (config.maxInFlight < config.batchSize) {
    const from = raw(src, "maxInFlight", "MASQ_MAX_IN_FLIGHT")?.from ?? "MASQ_MAX_IN_FLIGHT";
    throw new ConfigError(from, `must be at least the batch size (${config.batchSize}), or no batch could ever fill`);
  }
  return config;
}

/** The queue part of the settings, for commands where the queue is optional (`status`). */
export function readQueueSettings(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): { queueUrl: string; endpoint: string | undefined; protocol: SqsProtocolSetting; region: string } | undefined {
  const src = { flags, env };
  const queueUrl = url(src, "queueUrl", "QUEUE_URL", "SQS queue", HTTP);
  if (queueUrl === undefined) return undefined;
  return {
    queueUrl,
    endpoint:
      url(src, "sqsEndpoint", "AWS_ENDPOINT_URL_SQS", "SQS endpoint", HTTP) ?? url(src, undefined, "AWS_ENDPOINT_URL", "AWS endpoint", HTTP) ?? emulatorEndpoint(queueUrl),
    protocol: oneOf<SqsProtocolSetting>(src, "sqsProtocol", "MASQ_SQS_PROTOCOL", "auto", ["auto", "json", "query"]),
    region: readRegion(env),
  };
}

/**
 * "QUEUE_URL at localhost:4566" or "AWS_ENDPOINT_URL_SQS at …": the setting that decides where SQS requests go and
 * its host:port, for errors and "waiting" lines. On AWS (no endpoint set) the region's endpoint.
 */
export function sqsTargetText(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): string {
  const src = { flags, env };
  const endpoint = raw(src, "sqsEndpoint", "AWS_ENDPOINT_URL_SQS") ?? raw(src, undefined, "AWS_ENDPOINT_URL");
  const queue = raw(src, "queueUrl", "QUEUE_URL");
  const chosen = endpoint ?? queue;
  if (chosen === undefined) return "QUEUE_URL";
  try {
    const u = new URL(chosen.value);
    return `${chosen.from} at ${u.hostname}:${u.port || (u.protocol === "https:" ? "443" : "80")}`;
  } catch {
    return chosen.from;
  }
}

export function readRunConfig(flags: Record<string, unknown>, env: NodeJS.ProcessEnv, drain: boolean): RunConfig {
  const { config, errors } = readRunSettings(flags, env, drain);
  if (errors[0] !== undefined) throw errors[0];
  return config as RunConfig;
}

/**
 * run's settings, each part read on its own so that one mistake does not hide the next: `masq check` reports every
 * error, as a linter does, and runs the checks whose settings could be read. A part is present in `config` only
 * when it was read without error (databaseUrl and pseudonymKeyOverride may be present and undefined).
 */
export function readRunSettings(flags: Record<string, unknown>, env: NodeJS.ProcessEnv, drain: boolean): { config: Partial<RunConfig>; errors: ConfigError[] } {
  const config: Partial<RunConfig> = {};
  const errors: ConfigError[] = [];
  const part = (read: () => void) => {
    try {
      read();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      errors.push(err);
    }
  };
  part(() => {
    const queue = readQueueSettings(flags, env);
    if (queue === undefined) throw new ConfigError("QUEUE_URL", "is not set; give the queue's URL with --queue-url or QUEUE_URL");
    Object.assign(config, { queueUrl: queue.queueUrl, sqsProtocol: queue.protocol, sqsEndpoint: queue.endpoint, region: queue.region });
  });
  part(() => (config.databaseUrl = readDatabaseUrl(flags, env)));
  part(() => (config.table = readTable(flags, env)));
  part(() => (config.keys = readKeyConfig(env)));
  part(() => (config.pseudonymKeyOverride = readPseudonymKey(env)));
  part(() => (config.migrate = boolean({ flags, env }, "migrate", "MASQ_MIGRATE", true)));
  part(() => (config.logLevel = readLogLevel(flags, env)));
  part(() => (config.pipeline = readPipelineConfig(flags, env, drain)));
  // A drain is a one-shot job: no listener unless asked for (MASQ_HTTP_PORT or --http-port).
  part(() => (config.http = readHttp(flags, env, drain ? undefined : DEFAULT_HTTP_PORT)));
  return { config, errors };
}

/**
 * AWS_REGION (or AWS_DEFAULT_REGION), default us-east-1. The SDK puts it in host names and signatures and refuses
 * anything else at every call, which masq would have retried forever: refused here, once.
 */
export function readRegion(env: NodeJS.ProcessEnv): string {
  const r = raw({ flags: {}, env }, undefined, "AWS_REGION") ?? raw({ flags: {}, env }, undefined, "AWS_DEFAULT_REGION");
  if (r === undefined) return "us-east-1";
  if (!/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i.test(r.value)) {
    throw new ConfigError(r.from, `is not an AWS region name (for example us-east-1 or eu-west-2; got "${r.value}")`);
  }
  return r.value;
}

/**
 * The default port of the /metrics, /healthz, /readyz listener of `masq run`: not 9090 (Prometheus itself), outside
 * 9100-9999 (Prometheus's exporter allocations, all taken), and not in the IANA list (/etc/services) nor used by
 * a common service (Grafana 3000, OpenTelemetry 4317/4318/9464, web 8000/8080/8443/8888).
 */
export const DEFAULT_HTTP_PORT = 8717;

/** MASQ_HTTP_PORT: a port (0 picks a free one), or "off". MASQ_HTTP_HOST: an IP address or a host name. */
export function readHttp(flags: Record<string, unknown>, env: NodeJS.ProcessEnv, defaultPort: number | undefined): { port: number; host: string } | undefined {
  const src = { flags, env };
  const r = raw(src, "httpPort", "MASQ_HTTP_PORT");
  const h = raw(src, "httpHost", "MASQ_HTTP_HOST");
  const host = h === undefined ? "0.0.0.0" : h.value.trim();
  if (h !== undefined && !isHostName(host)) {
    throw new ConfigError(h.from, `must be an IP address or a host name to bind, e.g. 0.0.0.0, 127.0.0.1 or ::`);
  }
  if (r === undefined) return defaultPort === undefined ? undefined : { port: defaultPort, host };
  if (/^(off|false|no|none)$/i.test(r.value.trim())) return undefined;
  return { port: integer(src, "httpPort", "MASQ_HTTP_PORT", 0, 0, 65_535), host };
}

/** An IP address, or a DNS name (RFC 1123 labels) that is not a malformed dotted quad like 999.1.1.1. */
function isHostName(host: string): boolean {
  if (isIP(host) !== 0) return true;
  if (/^[\d.]+$/.test(host)) return false;
  return host.length <= 253 && host.split(".").every((label) => /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i.test(label));
}

/**
 * A queue URL that is not on amazonaws.com (LocalStack's http://localhost:4566/000000000000/login-queue, say)
 * names its own endpoint; on AWS the SDK resolves the endpoint from the region.
 */
function emulatorEndpoint(queueUrl: string): string | undefined {
  const u = new URL(queueUrl);
  return /(^|\.)amazonaws\.com(\.cn)?$/.test(u.hostname) ? undefined : u.origin;
}
