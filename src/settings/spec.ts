import { parseMasterKey, parsePseudonymKey } from "../ingest/pseudonymize.ts";
import { parseConnectionString } from "../db/connection.ts";
import { parseTableName, type TableName } from "../db/tables.ts";
import { boolean, hostName, httpUrl, integer, oneOf, portOrOff, region, secretFile, trimmed, wording, type Parser } from "./parse.ts";

/**
 * Every setting masq reads, declared once. From this list come the configuration reader (config.ts, with its
 * sources: flags, environment, config file, defaults: sources.ts, config-file.ts), each command's flags and their
 * --help (derived.ts, cli.ts), the known names that unknown MASQ_* variables and config-file keys are checked
 * against, and the settings tables of docs/configuration.md and docs/deploy.md (derived.ts; a test compares).
 */

/**
 * The part of the configuration a setting belongs to, after the config.ts function that reads it: a command's --help
 * lists the settings of the parts it reads (cli.ts).
 */
export type SettingPart = "config" | "queue" | "aws" | "database" | "table" | "keys" | "pseudonym-key" | "pipeline" | "http" | "log-level" | "log-format" | "connect" | "retention" | "migrate" | "contract";

export interface Setting<T> {
  /** The environment variable, and the setting's name in errors, docs and --help. */
  env: string;
  /** Names read, in order, when `env` is unset (AWS_DEFAULT_REGION after AWS_REGION). */
  fallbackEnv?: readonly string[];
  /** The flag, as commander writes it ("--batch-size <n>", "--no-migrate"); the commands that take it register it. */
  flag?: string;
  part: SettingPart;
  /** The flag's line in --help. */
  help?: string;
  /** The meaning column of docs/configuration.md: one line of Markdown. */
  doc: string;
  /**
   * What the setting means for the Lambda handler, for the settings table of docs/deploy.md: one line of Markdown.
   * Only the settings worth setting on the function have one (readLambdaConfig reads others too, with their defaults).
   */
  lambda?: string;
  /** The value when nothing sets it. Absent: unset, or it follows from other settings (config.ts says how). */
  default?: T;
  /** How the default reads in --help and the docs, when the value alone does not say it (Markdown code spans). */
  defaultText?: string;
  /**
   * Whether a value is a secret (a key, a connection string with a password): a config file that holds one must be
   * readable by its owner only (config-file.ts). Parsers never echo any value that may be secret.
   */
  secret?: true | ((text: string) => boolean);
  parse: Parser<T>;
}

function setting<T>(s: Setting<T> & { default: T }): Setting<T> & { default: T };
function setting<T>(s: Setting<T>): Setting<T>;
function setting<T>(s: Setting<T>): Setting<T> {
  return s;
}

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFormat = "json" | "pretty";
export type SqsProtocol = "json" | "query";
/** MASQ_SQS_PROTOCOL: "auto" (the default) asks the endpoint which one it speaks (source/sqs-protocol.ts). */
export type SqsProtocolSetting = SqsProtocol | "auto";

/**
 * The default port of the /metrics, /healthz, /readyz listener of `masq run`: not 9090 (Prometheus itself), outside
 * 9100-9999 (Prometheus's exporter allocations, all taken), and not in the IANA list (/etc/services) nor used by
 * a common service (Grafana 3000, OpenTelemetry 4317/4318/9464, web 8000/8080/8443/8888).
 */
export const DEFAULT_HTTP_PORT = 8717;

// The order here is the order of the docs' table and of each command's list of settings.
export const SETTINGS = {
  config: setting({
    env: "MASQ_CONFIG",
    flag: "--config <file>",
    part: "config",
    help: "a YAML file of settings, by their variables' names; flags and the environment win over it",
    doc: "A YAML file of settings ([below](#a-config-file)): each key is a setting's variable name as in this table (`MASQ_BATCH_SIZE: 500`). Flags and the environment win over it; it wins over the defaults. An unknown key, a value its setting refuses, or a secret in a file other users may read exits 2, naming the file, line:col and key.",
    defaultText: "none",
    parse: trimmed,
  }),
  queueUrl: setting({
    env: "QUEUE_URL",
    flag: "--queue-url <url>",
    part: "queue",
    help: "SQS queue URL",
    doc: "The SQS queue URL; required by `run` and `check`. If its host is not on `amazonaws.com`, its origin is also the endpoint.",
    parse: httpUrl("SQS queue"),
  }),
  databaseUrl: setting({
    env: "DATABASE_URL",
    flag: "--database-url <conninfo>",
    part: "database",
    help: 'Postgres: "postgres://user@host/db", "host=/var/run/postgresql dbname=db", …',
    doc: "A connection string in any form psql takes: a `postgres://` or `postgresql://` URL (a socket directory as `?host=/var/run/postgresql` or `%2F…`), keyword pairs (`host=/var/run/postgresql dbname=logins user=masq`, values quoted `'…'` when needed), or a plain database name. Parts left out come from the `PG*` variables. Without it, node-postgres reads `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE` and the rest.",
    lambda: "Required, unless you use the `PG*` variables. The function must reach Postgres: same VPC, security group rules.",
    defaultText: "the `PG*` variables",
    secret: (text) => parseConnectionString(text).password !== undefined,
    // Checked here so that a mistake exits 2 naming the setting; pg is given the text itself.
    parse: wording((value) => (parseConnectionString(value), value)),
  }),
  table: setting<TableName>({
    env: "MASQ_TABLE",
    flag: "--table <name>",
    part: "table",
    help: 'target table, "table" or "schema.table"',
    doc: "The target table, as `table` or `schema.table`. Plain identifiers only; the schema must exist. `masq subject export` and `subject erase` act on every table masq writes (registered by `masq migrate`, which registers only a table the schema owner owns, without triggers, rules or row-level security) unless this names one.",
    lambda: "Optional: the table the function writes; run `masq migrate --table` for it as the owner if it is not the default.",
    default: { schema: "public", name: "user_logins" },
    defaultText: "`public.user_logins`",
    parse: wording(parseTableName),
  }),
  keyProvider: setting({
    env: "MASQ_KEY_PROVIDER",
    part: "keys",
    doc: "`kms` or `local`: which master key wraps masq's keys. Unset, it follows from which of `MASQ_KMS_KEY_ID` and `MASQ_MASTER_KEY` is set (one is required for `run`, `unmask`, `pseudonym`, `rotate`); with both set it must be given.",
    defaultText: "from the key given",
    parse: oneOf(["kms", "local"]),
  }),
  kmsKeyId: setting({
    env: "MASQ_KMS_KEY_ID",
    part: "keys",
    doc: "The KMS key: key id, key ARN, alias (`alias/masq`) or alias ARN. A symmetric `ENCRYPT_DECRYPT` key.",
    lambda: "Required (or the local provider's `MASQ_MASTER_KEY_FILE`, from a layer or EFS). The function's role needs `kms:DescribeKey`, `kms:GenerateDataKey` with condition `kms:EncryptionContext:app` = `masq`, and `kms:Decrypt` only with `kms:EncryptionContext:purpose` = `pseudonym` (SECURITY.md). One `GenerateDataKey` per execution environment and hour, never per message.",
    parse: trimmed,
  }),
  kmsEndpoint: setting({
    env: "AWS_ENDPOINT_URL_KMS",
    part: "keys",
    doc: "The KMS endpoint (LocalStack, moto). Falls back to `AWS_ENDPOINT_URL`.",
    defaultText: "the SDK's",
    parse: httpUrl("KMS endpoint"),
  }),
  stsEndpoint: setting({
    env: "AWS_ENDPOINT_URL_STS",
    part: "keys",
    doc: "The STS endpoint, which names the caller in the unmask audit. Falls back to `AWS_ENDPOINT_URL`.",
    defaultText: "the SDK's",
    parse: httpUrl("STS endpoint"),
  }),
  masterKey: setting({
    env: "MASQ_MASTER_KEY",
    secret: true,
    part: "keys",
    doc: "The local provider's master key: exactly 32 bytes, hex or base64 (as below). There is no flag for it, so it never shows up in `ps` or shell history.",
    parse: parseMasterKey,
  }),
  masterKeyFile: setting({
    env: "MASQ_MASTER_KEY_FILE",
    part: "keys",
    doc: "A file holding the master key (the better choice: it stays out of the environment). Used when `MASQ_MASTER_KEY` is unset.",
    parse: secretFile(parseMasterKey),
  }),
  previousMasterKeys: setting<Uint8Array[]>({
    env: "MASQ_MASTER_KEY_PREVIOUS",
    secret: true,
    part: "keys",
    doc: "Earlier local master keys, comma-separated, that still unwrap keys until `masq rotate master-key` has re-wrapped them.",
    default: [],
    defaultText: "none",
    parse: (value, from) =>
      value
        .split(",")
        .map((k) => k.trim())
        .filter(Boolean)
        .map((k) => parseMasterKey(k, from)),
  }),
  dataKeyMaxAge: setting({
    env: "MASQ_DATA_KEY_MAX_AGE_SECONDS",
    part: "keys",
    doc: "How long, in seconds, a vault data key is used before it is replaced (or after `MASQ_DATA_KEY_MAX_USES` encryptions, whichever comes first).",
    default: 3600,
    parse: integer(1, 30 * 86_400),
  }),
  dataKeyMaxUses: setting({
    env: "MASQ_DATA_KEY_MAX_USES",
    part: "keys",
    doc: "How many encryptions a vault data key makes before it is replaced (or after `MASQ_DATA_KEY_MAX_AGE_SECONDS`, whichever comes first). Each new data key is one KMS call.",
    default: 1_000_000,
    parse: integer(1, 2 ** 32),
  }),
  pseudonymKey: setting({
    env: "MASQ_PSEUDONYM_KEY",
    secret: true,
    part: "pseudonym-key",
    doc: "Optional: your own HMAC key instead of the one masq creates and keeps wrapped in the database. Hex, or base64 (standard or URL-safe), at least 32 bytes once decoded; a value made only of hex digits is read as hex, and a `hex:` or `base64:` prefix forces the choice. masq keeps its fingerprint and refuses another key later. `masq rotate pseudonym-key` works only with the managed key.",
    lambda: "Optional: a pseudonym key of your own instead of the one masq keeps wrapped in the database. If you set it, encrypt the function's environment with a customer-managed KMS key and restrict `lambda:GetFunctionConfiguration`.",
    defaultText: "managed by masq",
    parse: parsePseudonymKey,
  }),
  pseudonymKeyFile: setting({
    env: "MASQ_PSEUDONYM_KEY_FILE",
    part: "pseudonym-key",
    doc: "A file holding that key in the same format (surrounding whitespace is ignored). Used only when `MASQ_PSEUDONYM_KEY` is unset.",
    parse: secretFile(parsePseudonymKey),
  }),
  sqsProtocol: setting<SqsProtocolSetting>({
    env: "MASQ_SQS_PROTOCOL",
    flag: "--sqs-protocol <protocol>",
    part: "queue",
    help: "auto (ask the endpoint), json (AWS, current emulators) or query (LocalStack < 3)",
    doc: "`auto` (masq asks the endpoint at start which protocol it speaks, and logs it), `json` (AWS JSON 1.0: AWS, LocalStack ≥ 3, fauxqs) or `query` (the older Query protocol: LocalStack < 3, some SQS-compatible services). A forced protocol the endpoint does not speak exits 2, naming the setting.",
    default: "auto",
    parse: oneOf(["auto", "json", "query"]),
  }),
  sqsEndpoint: setting({
    env: "AWS_ENDPOINT_URL_SQS",
    flag: "--sqs-endpoint <url>",
    part: "queue",
    help: "SQS endpoint override; else from the queue URL off AWS",
    doc: "The SQS endpoint. Falls back to `AWS_ENDPOINT_URL`, then to the queue URL's origin (except on `amazonaws.com`), then to the SDK's own endpoint resolution.",
    parse: httpUrl("SQS endpoint"),
  }),
  awsEndpoint: setting({
    env: "AWS_ENDPOINT_URL",
    part: "aws",
    doc: "The endpoint of every AWS service masq calls (SQS, KMS, STS) whose own endpoint setting is unset: LocalStack, moto.",
    defaultText: "the SDK's",
    parse: httpUrl("AWS endpoint"),
  }),
  region: setting({
    env: "AWS_REGION",
    fallbackEnv: ["AWS_DEFAULT_REGION"],
    part: "aws",
    doc: "The region, in that order.",
    default: "us-east-1",
    parse: region,
  }),
  batchSize: setting({
    env: "MASQ_BATCH_SIZE",
    flag: "--batch-size <n>",
    part: "pipeline",
    help: "rows per Postgres transaction",
    doc: "Messages per Postgres transaction.",
    lambda: "The most messages per statement. Larger invocation batches are committed in statements of this size.",
    default: 1000,
    parse: integer(1, 10_000),
  }),
  batchWaitMs: setting({
    env: "MASQ_BATCH_WAIT_MS",
    flag: "--batch-wait-ms <ms>",
    part: "pipeline",
    help: "commit a partial batch after this long",
    doc: "How long a partial batch waits before it is committed anyway: the most it adds to a message's lag when the queue is quiet; a busy queue fills batches of `MASQ_BATCH_SIZE` first.",
    // 50 rather than 100: at half of what 2 cores drain, lag p99 100 ms instead of 190 (docs/benchmark.md, 2026-12-06).
    default: 50,
    parse: integer(0, 60_000),
  }),
  receivers: setting({
    env: "MASQ_RECEIVERS",
    flag: "--receivers <n>",
    part: "pipeline",
    help: "concurrent long-polling receivers",
    doc: "Concurrent long-polling receivers, each asking for 10 messages per call.",
    default: 8,
    parse: integer(1, 100),
  }),
  writers: setting({
    env: "MASQ_WRITERS",
    flag: "--writers <n>",
    part: "pipeline",
    help: "concurrent batch commits",
    doc: "Batches committed at once. The Postgres pool holds writers + 2 connections.",
    default: 2,
    parse: integer(1, 32),
  }),
  prepareThreads: setting({
    env: "MASQ_PREPARE_THREADS",
    part: "pipeline",
    doc: "Worker threads that parse, validate, mask and seal batches while the main thread receives, commits and deletes. `0` does that work on the main thread, as the Lambda handler always does. A prepare thread that stops is fatal: masq exits 1 and deletes nothing it did not commit.",
    defaultText: "min(writers, available cores − 2), at least 0 (none on 2 cores)",
    parse: integer(0, 32),
  }),
  maxInFlight: setting({
    env: "MASQ_MAX_IN_FLIGHT",
    flag: "--max-in-flight <n>",
    part: "pipeline",
    help: "messages held between receive and delete",
    doc: "The most messages held between receive and delete (at least the batch size). Receivers pause at this limit.",
    defaultText: "5000 or 3 × batch size, whichever is larger",
    parse: integer(10, 1_000_000),
  }),
  maxInFlightBytes: setting({
    env: "MASQ_MAX_IN_FLIGHT_BYTES",
    part: "pipeline",
    doc: "The most bytes of message bodies held between receive and delete (1 MiB to 16 GiB). A receive starts only when what is held plus a reservation for every receive under way (ten bodies of the queue's `MaximumMessageSize`, at most 256 KiB each) fits, so large bodies cannot exhaust memory; the default leaves room for every receiver to poll at once ([operations.md](operations.md#many-receivers)).",
    defaultText: "`33554432` (32 MiB), or `MASQ_RECEIVERS` × 2.5 MiB + 8 MiB when that is more (48 MiB for 16 receivers)",
    parse: integer(1024 * 1024, 16 * 1024 ** 3),
  }),
  waitTimeSeconds: setting({
    env: "MASQ_WAIT_TIME_SECONDS",
    flag: "--wait-time-seconds <s>",
    part: "pipeline",
    help: "long-poll wait",
    doc: "The long-poll wait of each receive. A drain short-polls while the queue holds messages and long-polls this long only while SQS counts messages it cannot receive yet (in flight elsewhere, delayed).",
    defaultText: "`20`, or `1` with `--drain`",
    parse: integer(0, 20),
  }),
  visibilityTimeout: setting({
    env: "MASQ_VISIBILITY_TIMEOUT",
    flag: "--visibility-timeout <s>",
    part: "pipeline",
    help: "visibility timeout requested on receive, extended while held",
    doc: "The visibility timeout requested on receive, and the length of each extension while masq holds a message.",
    default: 60,
    parse: integer(5, 43_200),
  }),
  shutdownTimeoutMs: setting({
    env: "MASQ_SHUTDOWN_TIMEOUT_MS",
    flag: "--shutdown-timeout-ms <ms>",
    part: "pipeline",
    help: "deadline for the graceful stop",
    doc: "The deadline for a graceful stop.",
    default: 30_000,
    parse: integer(1_000, 3_600_000),
  }),
  contract: setting({
    env: "MASQ_CONTRACT",
    flag: "--contract <file>",
    part: "contract",
    help: "privacy contract file (YAML): the events run ingests, migrate makes tables for, quarantine replay replays, check --offline checks, preview previews, and the kinds pseudonym takes",
    doc: "A privacy contract file (YAML, [contracts.md](contracts.md)): the events `masq run` ingests (each event type into its own table; `MASQ_TABLE` is then ignored), the tables `masq migrate` creates, extends and registers for it ([contracts.md](contracts.md#tables)), the quarantined records `masq quarantine replay` replays by it (its own; the login's are left, [contracts.md](contracts.md#replaying-quarantined-events)), the file `masq check` and `masq preview` read, and the kinds (and their fields' types) `masq pseudonym` takes ([contracts.md](contracts.md#finding-a-values-rows-masq-pseudonym)). Unset, masq uses the login contract shipped with it (`contracts/login.yaml`), on the login path and with the login table `MASQ_TABLE`, as before.",
    lambda: "Optional: a contract file packaged with the function (its path in the function's file system); its tables must exist (`masq migrate --contract`, as the owner).",
    defaultText: "the login contract shipped with masq (`contracts/login.yaml`)",
    parse: trimmed,
  }),
  migrate: setting({
    env: "MASQ_MIGRATE",
    flag: "--no-migrate",
    part: "migrate",
    help: "do not apply pending migrations at start (MASQ_MIGRATE=false)",
    doc: "Whether `run` (and the Lambda handler's cold start) applies pending migrations. Off, it still checks the target table, and creates it if absent. `true`/`false`, `yes`/`no`, `on`/`off` or `1`/`0`, in any case; anything else exits 2.",
    lambda: "`false` when a least-privilege role runs the function ([SECURITY.md](../SECURITY.md#roles)); run `masq migrate` once as the owner.",
    default: true,
    parse: boolean,
  }),
  httpPort: setting<number | "off">({
    env: "MASQ_HTTP_PORT",
    flag: "--http-port <port>",
    part: "http",
    help: 'port for /metrics, /healthz, /readyz, or "off"',
    doc: "The `/metrics`, `/healthz`, `/readyz` listener: a port, `0` for any free port, or `off`. 8717 is used by no common service (9090 is Prometheus's own, 9100-9999 its exporters'). A port in use exits 2 naming this setting. `masq top` watches this port on 127.0.0.1 unless given `--url`.",
    defaultText: `\`${DEFAULT_HTTP_PORT}\`; none for \`run --drain\` unless given`,
    parse: portOrOff(),
  }),
  httpHost: setting({
    env: "MASQ_HTTP_HOST",
    flag: "--http-host <host>",
    part: "http",
    help: "address the HTTP listener binds",
    doc: "The address that listener binds: an IP address or a host name. One that is not valid, or not an address of this host, exits 2 naming this setting.",
    default: "0.0.0.0",
    parse: hostName,
  }),
  connectTimeoutSeconds: setting({
    env: "MASQ_CONNECT_TIMEOUT_SECONDS",
    part: "connect",
    doc: "How long every command but the service (`run` without `--drain`) waits for an unreachable Postgres, SQS or KMS before it gives up, naming the setting and host:port. The service waits as long as it takes.",
    default: 30,
    parse: integer(1, 86_400),
  }),
  logLevel: setting<LogLevel>({
    env: "MASQ_LOG_LEVEL",
    flag: "--log-level <level>",
    part: "log-level",
    help: LOG_LEVELS.join("|"),
    doc: `${LOG_LEVELS.map((l) => `\`${l}\``).join(", ")}.`,
    lambda: "`info` logs one JSON line per invocation (`sqs batch processed`, with counts and no message content).",
    default: "info",
    parse: oneOf(LOG_LEVELS),
  }),
  logFormat: setting<LogFormat | "auto">({
    env: "MASQ_LOG_FORMAT",
    part: "log-format",
    doc: "`json` (JSON lines) or `pretty` (one readable line per event, pino-pretty); `auto` chooses. On a terminal, log lines print above the progress bar.",
    default: "auto",
    defaultText: "`auto`: readable on a terminal, else `json`",
    parse: oneOf(["json", "pretty", "auto"]),
  }),
  retentionDays: setting({
    env: "MASQ_VAULT_RETENTION_DAYS",
    part: "retention",
    doc: "How many days of data stay recoverable: `masq vault prune`, and `masq run` hourly, delete the vault entries that no row of the last N days uses and the quarantine records older than N days ([operations.md](operations.md#retention)). `masq status` shows it beside the oldest value's age.",
    defaultText: "off (kept forever)",
    // The database refuses anything outside these bounds too.
    parse: integer(1, 36_500, (value) => `must be a positive whole number of days, 1 to 36500 (got "${value.slice(0, 40)}"); unset it to keep values forever`),
  }),
};

export type SettingKey = keyof typeof SETTINGS;

/** The environment variables of a setting: its own, then its fallbacks. */
export function envNames(s: Setting<unknown>): string[] {
  return [s.env, ...(s.fallbackEnv ?? [])];
}

/** The default as the docs and --help show it (Markdown code spans), or undefined when there is none to show. */
export function shownDefault(s: Setting<unknown>): string | undefined {
  if (s.defaultText !== undefined) return s.defaultText;
  const d = s.default;
  return typeof d === "string" || typeof d === "number" || typeof d === "boolean" ? `\`${d}\`` : undefined;
}

/** commander's key for a flag: "--batch-size <n>" → batchSize, "--no-migrate" → migrate. */
export function attributeName(flag: string): string {
  return flag
    .split(" ")[0]!
    .replace(/^--(no-)?/, "")
    .replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}
