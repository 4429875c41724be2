import { pino, type DestinationStream, type Logger } from "pino";
import { createRequire } from "node:module";
import type { LogFormat, LogLevel } from "./settings/config.ts";
import { terminalLine, type LiveLine } from "./progress/live-line.ts";

export type { Logger };

// pino-pretty (CommonJS) is loaded when a line is to be pretty, not at every start: a container's JSON logs never
// need it, and it costs about 80 ms of start-up.
const require = createRequire(import.meta.url);

/**
 * Logs on stdout: JSON lines for machines (pipes, files, containers), one readable line per event on a terminal
 * (pino-pretty), MASQ_LOG_FORMAT=json|pretty to choose. masq never logs a body, an ip or a device id; the redaction
 * below is a second line of defence should a future change try to. Writes are synchronous: logs are rare (no
 * per-message lines) and a line written just before exit must not be lost.
 */
export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream, format: LogFormat | "auto" = "auto", line: LiveLine = terminalLine): Logger {
  const tty = ((destination ?? process.stdout) as { isTTY?: boolean }).isTTY === true;
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
    logDestination(destination, tty, format === "auto" ? (tty ? "pretty" : "json") : format, line),
  );
}

function logDestination(destination: NodeJS.WritableStream | undefined, tty: boolean, format: LogFormat, line: LiveLine): DestinationStream {
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
