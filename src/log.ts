import { pino, type Logger } from "pino";
import type { LogLevel } from "./config.ts";

export type { Logger };

/**
 * Structured JSON logs on stdout. masq never logs a body, an ip or a device id; the redaction below is a second
 * line of defence should a future change try to. Writes are synchronous: logs are rare (no per-message lines)
 * and a line written just before exit must not be lost.
 */
export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
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
    destination ?? pino.destination({ fd: 1, sync: true }),
  );
}
