import type pg from "pg";
import { sql } from "kysely";
import { masqQueries } from "../db/schema.ts";
import { mayCreateAuditKey, openAuditKey } from "../keys/audit-key.ts";
import { databaseSetting, hasMasterKey, readConnectTimeoutMs, readContractFile, readDatabaseUrl, readKeyConfig, readLogFormat, readLogLevel, readTable, settingSources, type Sources } from "../settings/config.ts";
import { describeError } from "../errors.ts";
import { loadContractTarget, prepareContractTables } from "../contracts/contract-tables.ts";
import { createLogger, type Logger } from "../log.ts";
import { createDb } from "../db/pool.ts";
import { createKeyProvider } from "../keys/key-provider.ts";
import { prepareDatabase, type TablePreparation } from "../db/prepare-database.ts";
import { onShutdownSignals } from "../signals.ts";
import { lookup } from "../settings/sources.ts";
import { SETTINGS } from "../settings/spec.ts";

/**
 * `masq migrate`: applies pending migrations, creates the target table if absent (with a contract file, each of its
 * tables, or the columns it added: contracts/contract-tables.ts), and, as the schema owner with the
 * master key configured, makes the audit key if the database has none (the only login that may: 103_audit.sql). Waits
 * for Postgres at most MASQ_CONNECT_TIMEOUT_SECONDS; a failure is logged and thrown, for the CLI to print as one line
 * on stderr.
 */
export async function migrateCommand(flags: Record<string, unknown>): Promise<number> {
  const src = settingSources(flags, process.env);
  // Read before anything connects: a contract file that does not read exits 2.
  const contract = loadContractTarget(readContractFile(src), src.flags.contract === undefined ? "MASQ_CONTRACT" : "--contract");
  const table = readTable(src);
  const logger = createLogger(readLogLevel(src), undefined, readLogFormat(src));
  const connectTimeoutMs = readConnectTimeoutMs(src);
  const db = createDb({ databaseUrl: readDatabaseUrl(src), setting: databaseSetting(src), connectTimeoutMs, logger });
  const tableGiven = lookup(SETTINGS.table, src);
  if (contract !== undefined && tableGiven !== undefined) {
    logger.warn({ setting: tableGiven.from }, `${tableGiven.from} is not used with a contract file: the contract names its tables, and the login table is neither created nor registered`);
  }
  const abort = new AbortController();
  const signals = onShutdownSignals({ first: (signal) => abort.abort(signal) });
  try {
    const target = contract === undefined ? table : { prepareTables: (opts: TablePreparation) => prepareContractTables(db, contract, opts) };
    await prepareDatabase(db, target, { migrate: true, logger, signal: abort.signal, deadlineMs: connectTimeoutMs });
    await prepareAuditKey(db.pool, src, logger, abort.signal);
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

/**
 * The audit key, made by the owner before any other login needs it (proven to unwrap, with its first row). Without a
 * master key configured this is left to the owner's first audited action; an existing key is not touched.
 */
async function prepareAuditKey(pool: pg.Pool, src: Sources, logger: Logger, signal: AbortSignal): Promise<void> {
  // A login that is not the owner (the service login's migrate, a no-op) neither makes nor reads it.
  if (!(await mayCreateAuditKey(pool))) return;
  const exists = (await sql<{ n: number }>`SELECT count(*)::int AS n FROM masq.audit_key()`.execute(masqQueries(pool))).rows[0]!.n > 0;
  if (exists) return;
  if (!hasMasterKey(src)) {
    logger.info("no audit key yet: run masq migrate with the master key configured to make it (other logins' audited commands need it)");
    return;
  }
  const provider = createKeyProvider(readKeyConfig(src));
  try {
    const key = await openAuditKey(pool, provider, signal);
    key.key.fill(0);
    logger.info({ chainStart: key.chainStart.toString() }, "audit key created");
  } finally {
    provider.close();
  }
}
