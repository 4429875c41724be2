import { readDatabaseUrl, readLogFormat, readLogLevel, readTable } from "../config.ts";
import { describeError } from "../errors.ts";
import { createLogger } from "../log.ts";
import { createDb } from "../sink/db.ts";
import { prepareDatabase } from "./setup.ts";
import { onShutdownSignals } from "./signals.ts";

/** `masq migrate`: applies pending migrations and creates the target table if absent. */
export async function migrateCommand(flags: Record<string, unknown>): Promise<number> {
  const table = readTable(flags, process.env);
  const logger = createLogger(readLogLevel(flags, process.env), undefined, readLogFormat(process.env));
  const db = createDb({ databaseUrl: readDatabaseUrl(flags, process.env), logger });
  const abort = new AbortController();
  const signals = onShutdownSignals({ first: () => abort.abort() });
  try {
    await prepareDatabase(db, table, { migrate: true, logger, signal: abort.signal });
    logger.info("database is up to date");
    return 0;
  } catch (err) {
    logger.error({ err: describeError(err) }, "migration failed");
    return 1;
  } finally {
    signals.dispose();
    await db.close().catch(() => undefined);
    logger.flush();
  }
}
