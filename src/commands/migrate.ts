import { databaseSetting, readConnectTimeoutMs, readDatabaseUrl, readLogFormat, readLogLevel, readTable } from "../config.ts";
import { describeError } from "../errors.ts";
import { createLogger } from "../log.ts";
import { createDb } from "../sink/db.ts";
import { prepareDatabase } from "./setup.ts";
import { onShutdownSignals } from "./signals.ts";

/**
 * `masq migrate`: applies pending migrations and creates the target table if absent. Waits for Postgres at most
 * MASQ_CONNECT_TIMEOUT_SECONDS; a failure is logged and thrown, for the CLI to print as one line on stderr.
 */
export async function migrateCommand(flags: Record<string, unknown>): Promise<number> {
  const table = readTable(flags, process.env);
  const logger = createLogger(readLogLevel(flags, process.env), undefined, readLogFormat(process.env));
  const connectTimeoutMs = readConnectTimeoutMs(process.env);
  const db = createDb({ databaseUrl: readDatabaseUrl(flags, process.env), setting: databaseSetting(flags, process.env), connectTimeoutMs, logger });
  const abort = new AbortController();
  const signals = onShutdownSignals({ first: (signal) => abort.abort(signal) });
  try {
    await prepareDatabase(db, table, { migrate: true, logger, signal: abort.signal, deadlineMs: connectTimeoutMs });
    logger.info("database is up to date");
    return 0;
  } catch (err) {
    logger.error({ err: describeError(err) }, "migration failed");
    throw err;
  } finally {
    signals.dispose();
    await db.close().catch(() => undefined);
    logger.flush();
  }
}
