/**
 * What masq writes on stdout: its log lines, and what happens when the reader of stdout goes away. Logs are JSON lines
 * for machines and one readable line per event on a terminal; a closed stdout ends the command quietly, with the
 * status a Unix tool killed by SIGPIPE leaves.
 */
import { createRequire } from "node:module";
import type { DestinationStream, Logger } from "pino";
import { errorLine } from "./errors.ts";
import { terminalLine, type LiveLine } from "./ops/progress.ts";
import type { LogFormat, LogLevel } from "./settings/config.ts";

export type { Logger };

// pino (CommonJS) is loaded when a logger is made, and pino-pretty when a line is to be pretty: the command line
// installs the closed-stdout handler below before it knows whether the command logs at all, and a container's JSON
// logs never need pino-pretty (about 80 ms of start-up).
const require = createRequire(import.meta.url);
/** pino once loaded, or as a bundle hands it over (usePino). */
let pinoModule: typeof import("pino") | undefined;

/**
 * pino given up front, by the entry of a bundle (the Lambda handler, deploy/lambda/package.sh): a bundler follows an
 * import but not the createRequire that loads pino here, and the bundle has no node_modules to load it from.
 */
export function usePino(pino: typeof import("pino")): void {
  pinoModule = pino;
}

/**
 * Logs on stdout: JSON lines for machines (pipes, files, containers), one readable line per event on a terminal
 * (pino-pretty), MASQ_LOG_FORMAT=json|pretty to choose. masq never logs a body, an ip or a device id; the redaction
 * below is a second line of defence should a future change try to. Writes are synchronous: logs are rare (no
 * per-message lines) and a line written just before exit must not be lost.
 */
export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream, format: LogFormat | "auto" = "auto", line: LiveLine = terminalLine): Logger {
  const tty = ((destination ?? process.stdout) as { isTTY?: boolean }).isTTY === true;
  const pino = (pinoModule ??= require("pino") as typeof import("pino"));
  return pino(
    {
      level,
      base: { service: "masq" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: {
        paths: ["body", "ip", "device_id", "deviceId", "*.body", "*.ip", "*.device_id", "*.deviceId"],
        censor: "[redacted]",
      },
    },
    logDestination(pino, destination, tty, format === "auto" ? (tty ? "pretty" : "json") : format, line),
  );
}

function logDestination(pino: typeof import("pino"), destination: NodeJS.WritableStream | undefined, tty: boolean, format: LogFormat, line: LiveLine): DestinationStream {
  const fd = destination === undefined || destination === process.stdout ? 1 : destination === process.stderr ? 2 : undefined;
  const sink = fd === undefined ? destination! : pino.destination({ fd, sync: true });
  if (format === "json" && !tty) return sink;
  // On a terminal a progress bar may hold the last line: every log line is written above it, never into it.
  const render =
    format === "pretty"
      ? (require("pino-pretty") as typeof import("pino-pretty")).prettyFactory({
          colorize: tty && process.env.NO_COLOR === undefined,
          translateTime: "SYS:HH:MM:ss",
          ignore: "pid,hostname,service",
          singleLine: true,
          // masq logs errors as one described string (errors.ts describeError): keep them on the event's line.
          errorLikeObjectKeys: [],
        })
      : (line: string) => line;
  return { write: (text: string) => line.above(() => void sink.write(render(text))) };
}

/**
 * A reader that stops early (`masq check | head -1`) closes masq's stdout, and the next write fails with EPIPE. That
 * is the reader's choice, not a failure of the command: masq stops quietly with the status a Unix tool killed by
 * SIGPIPE leaves (141, as `yes | head -1` leaves for yes). Where the output was a reveal, stderr says so: its audit
 * row committed before anything was written, and it stays (it records what was asked, whatever was read).
 */
let revealed: { what: string; auditSeq: string | undefined } | undefined;

/** What is about to be written reveals originals under this audit row (undefined: the row's number is not at hand). */
export function revealing(what: string, auditSeq?: string): void {
  revealed = { what, auditSeq };
}

export function isClosedPipe(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === "EPIPE";
}

/** A write to stdout already failed because the reader went away (the 'error' event may not have been emitted yet). */
export function stdoutWasClosed(): boolean {
  return isClosedPipe(process.stdout.errored);
}

/**
 * Resolves once everything written to stdout has reached the reader: a pipe takes what fits and Node queues the rest,
 * which exiting at once would drop. A reader that went away meanwhile ends the process here (stopOnClosedStdout).
 */
export async function flushStdout(): Promise<void> {
  // Nothing queued: exit in this turn of the event loop, as before (the demo's embedded Postgres has its own signal
  // hooks that exit with 128+n if given a turn after a Ctrl-C the demo already handled).
  if (process.stdout.destroyed || process.stdout.writableLength === 0) return;
  const err = await new Promise<Error | null | undefined>((resolve) => process.stdout.write("", resolve));
  if (isClosedPipe(err)) stopOnClosedStdout();
}

/** The one handler of a closed stdout, for every command: installed once, before any command writes. */
export function watchStdout(): void {
  process.stdout.on("error", (err) => {
    if (isClosedPipe(err)) stopOnClosedStdout();
    process.stderr.write(`${errorLine(err)}\n`);
    process.exit(1);
  });
}

export function stopOnClosedStdout(): never {
  if (revealed !== undefined) {
    const record = revealed.auditSeq === undefined ? "the audit trail records it (masq audit list)" : `audit row ${revealed.auditSeq} records it`;
    try {
      process.stderr.write(`masq: stdout was closed before the ${revealed.what} was complete (the reader stopped reading): what was written before may have been read; ${record}\n`);
    } catch {
      // stderr gone too: the exit status still tells.
    }
  }
  // 128 + SIGPIPE.
  process.exit(128 + 13);
}
