/**
 * `masq check`, the preflight of `masq run` against AWS and Postgres, and `masq check --offline`, what can be checked
 * with neither. Both print one line per check in the same format.
 */
import type { SQSClient } from "@aws-sdk/client-sqs";
import { sql } from "kysely";
import { describeContract, loadContract } from "../contracts/contract.ts";
import { inspectContractTables, loadContractTarget, type ContractTarget, type TableReport } from "../contracts/contract-tables.ts";
import { loadMigrations } from "../db/migrate.ts";
import { targetText } from "../db/connection.ts";
import { createDb, type Db, sayWaiting, waitForPostgres } from "../db/pool.ts";
import { missingIngestPrivileges } from "../db/prepare-database.ts";
import { fromPostgres } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";
import { qualified, verifyTargetTable } from "../db/tables.ts";
import { ConfigError, errorLine, exitCodeFor, FatalError, UnreachableError } from "../errors.ts";
import { createSqsClient, detectSqsProtocol } from "../ingest/sqs-client.ts";
import { SqsSource } from "../ingest/sqs-source.ts";
import { unwrapDataKeys } from "../keys/unwrap-data-keys.ts";
import { createKeyProvider, type KeyProvider } from "../keys/key-provider.ts";
import { activePseudonymKey } from "../keys/pseudonym-keys.ts";
import { databaseSetting, readConnectTimeoutMs, readContractFile, readRunSettings, type RunConfig, settingSources, type Sources, sqsTargetText } from "../settings/config.ts";

/** A check passes with a detail, fails with an error (printed in the CLI's one-line format), or is skipped. */
type Result = { ok: string } | { failed: unknown } | { skipped: string };

/**
 * `masq check`: the preflight of `masq run`, in the order run needs things: configuration, AWS credentials, the
 * queue, Postgres (login, migrations, the target table, ingest privileges), the key provider. One line per check,
 * and one per wrong setting (all of them, as a linter reports every error); a check runs whenever the settings it
 * needs could be read. Exit 0 only when run would work, 2 when a setting is wrong, 1 otherwise. It consumes no
 * message and writes nothing: every query reads, and no key is created. Each network check waits at most
 * MASQ_CONNECT_TIMEOUT_SECONDS (30 s while that setting is itself wrong). With --offline, only what needs neither AWS
 * nor Postgres (checkOffline, below).
 */
export async function checkCommand(flags: Record<string, unknown>): Promise<number> {
  const src = settingSources(flags, process.env);
  if (flags.offline === true) return checkOffline(src);
  const results: Result[] = [];
  const report = (name: string, r: Result) => {
    results.push(r);
    if ("ok" in r) process.stdout.write(`ok    ${name}: ${r.ok}\n`);
    else if ("skipped" in r) process.stdout.write(`skip  ${name}: ${r.skipped}\n`);
    else process.stdout.write(`FAIL  ${name}: ${errorLine(r.failed).replace(/^masq: /, "")}\n`);
  };

  // Every setting is read, and every mistake reported, before the checks that can run without it go on.
  const { config, errors } = readRunSettings(src, false);
  let deadlineMs = 30_000;
  try {
    deadlineMs = readConnectTimeoutMs(src);
  } catch (err) {
    errors.push(err as ConfigError);
  }
  if (errors.length === 0) report("configuration", { ok: `queue ${config.queueUrl}, table ${qualified(config.table!)}, key provider ${config.keys!.provider}` });
  for (const err of errors) report("configuration", { failed: err });
  // A contract other than the login's: each of its tables is checked against what masq migrate --contract would do.
  let contract: ContractTarget | undefined;
  try {
    contract = loadContractTarget(readContractFile(src), src.flags.contract === undefined ? "MASQ_CONTRACT" : "--contract");
    if (contract !== undefined) report("contract", { ok: describeContract(contract.contract) });
  } catch (err) {
    report("contract", { failed: err });
  }

  const queue = queuePart(config);
  if (queue !== undefined) await checkSqs(queue, src, deadlineMs, report);
  else for (const name of ["AWS credentials", "queue"]) report(name, { skipped: "needs valid queue settings (see configuration)" });

  const database = databasePart(config);
  const keys = keysPart(config);
  if (database === undefined) {
    for (const name of ["Postgres login", "migrations", "target table", ...(contract ? ["contract tables"] : []), "ingest privileges"]) report(name, { skipped: "needs valid database settings (see configuration)" });
  }
  const db = database && createDb({ databaseUrl: database.databaseUrl, setting: databaseSetting(src), connectTimeoutMs: deadlineMs, poolSize: 2 });
  const provider = keys && createKeyProvider(keys.keys);
  try {
    const pgOk = db !== undefined && database !== undefined && (await checkPostgres(db, database, contract, deadlineMs, report));
    if (provider === undefined || keys === undefined) report("key provider", { skipped: "needs valid key settings (see configuration)" });
    else await checkKeys(db, provider, keys, pgOk, deadlineMs, report);
  } finally {
    provider?.close();
    await db?.close().catch(() => undefined);
  }
  return finish(results);
}

type QueuePart = Pick<RunConfig, "queueUrl" | "sqsProtocol" | "sqsEndpoint" | "region">;
type DatabasePart = Pick<RunConfig, "databaseUrl" | "table" | "migrate">;
type KeysPart = Pick<RunConfig, "keys" | "pseudonymKeyOverride">;

/** The settings a group of checks needs, when every one of them could be read. */
function queuePart(c: Partial<RunConfig>): QueuePart | undefined {
  return c.queueUrl === undefined || c.sqsProtocol === undefined || c.region === undefined ? undefined : { queueUrl: c.queueUrl, sqsProtocol: c.sqsProtocol, sqsEndpoint: c.sqsEndpoint, region: c.region };
}

function databasePart(c: Partial<RunConfig>): DatabasePart | undefined {
  return !("databaseUrl" in c) || c.table === undefined || c.migrate === undefined ? undefined : { databaseUrl: c.databaseUrl, table: c.table, migrate: c.migrate };
}

function keysPart(c: Partial<RunConfig>): KeysPart | undefined {
  return c.keys === undefined || !("pseudonymKeyOverride" in c) ? undefined : { keys: c.keys, pseudonymKeyOverride: c.pseudonymKeyOverride };
}

type Report = (name: string, r: Result) => void;

async function checkSqs(config: QueuePart, src: Sources, deadlineMs: number, report: Report): Promise<void> {
  const where = sqsTargetText(src);
  // The credentials come first: the protocol probe would fail on them too, less clearly. The client made for them
  // speaks JSON; only its credential chain is used.
  const sqs = createSqsClient({ region: config.region, endpoint: config.sqsEndpoint, protocol: "json", requestTimeoutMs: Math.min(deadlineMs, 35_000) });
  try {
    try {
      const credentials = await withDeadline(sqs.config.credentials(), deadlineMs, "AWS credentials");
      report("AWS credentials", { ok: `found (access key id ending …${credentials.accessKeyId.slice(-4)})` });
    } catch (err) {
      report("AWS credentials", {
        failed:
          err instanceof UnreachableError
            ? err
            : new ConfigError("AWS_ACCESS_KEY_ID", `no AWS credentials were found (${(err as Error).message})`, {
                what: "no AWS credentials",
                hint: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an IAM role is available",
              }),
      });
      report("queue", { skipped: "needs AWS credentials" });
      return;
    }
    let client: SQSClient | undefined;
    try {
      const signal = AbortSignal.timeout(deadlineMs);
      // The protocol run would use: detected (MASQ_SQS_PROTOCOL=auto) or the one forced, checked against the endpoint.
      const protocol = await detectSqsProtocol({ queueUrl: config.queueUrl, region: config.region, endpoint: config.sqsEndpoint, setting: config.sqsProtocol, signal });
      client = createSqsClient({ region: config.region, endpoint: config.sqsEndpoint, protocol, requestTimeoutMs: Math.min(deadlineMs, 35_000) });
      const c = await new SqsSource(client, config.queueUrl).counts(signal);
      const how = config.sqsProtocol === "auto" ? "detected" : "MASQ_SQS_PROTOCOL";
      report("queue", { ok: `${config.queueUrl} answers over the ${protocol} protocol (${how}; ${where}): ${c.visible} visible, ${c.inFlight} in flight, ${c.delayed} delayed` });
    } catch (err) {
      const help = (err as { help?: object }).help ?? {};
      report("queue", {
        failed: err instanceof ConfigError ? err : new FatalError((err as Error).message, { what: "the queue does not answer", object: where, hint: (err as Error).message, ...help }),
      });
    } finally {
      client?.destroy();
    }
  } finally {
    sqs.destroy();
  }
}

/** Login, migrations, the target table and the ingest privileges; true when the database is usable for the key checks. */
async function checkPostgres(db: Db, config: DatabasePart, contract: ContractTarget | undefined, deadlineMs: number, report: Report): Promise<boolean> {
  const rest = ["migrations", "target table", ...(contract ? ["contract tables"] : []), "ingest privileges"];
  let who: { user: string; database: string };
  try {
    await waitForPostgres(db, { deadlineMs, onWait: sayWaiting });
    const { rows } = await sql<{ user: string; database: string }>`SELECT current_user AS user, current_database() AS database`.execute(masqQueries(db));
    who = rows[0]!;
    report("Postgres login", { ok: `${targetText(db.target)} as role ${who.user}` });
  } catch (err) {
    report("Postgres login", { failed: fromPostgres(err, db.target) });
    for (const name of rest) report(name, { skipped: "needs a Postgres login" });
    return false;
  }
  const migrations = loadMigrations();
  // The versions this masq ships; a database of an earlier masq records lower ones (see src/db/migrate.ts).
  const expected = { first: migrations[0]?.version ?? 1, last: migrations.at(-1)?.version ?? 0 };
  let version = 0;
  try {
    const state = await sql<{ v: number | null; owner: string | null; can_create: boolean }>`SELECT (SELECT max(version) FROM masq.schema_migrations) AS v,
              (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'masq') AS owner,
              has_database_privilege(current_database(), 'CREATE') AS can_create`.execute(masqQueries(db));
    version = state.rows[0]?.v ?? 0;
    report("migrations", migrationResult(version, expected, config.migrate, state.rows[0]!, who.user));
  } catch (err) {
    if ((err as { code?: string }).code !== "42P01") {
      report("migrations", { failed: fromPostgres(err, db.target) });
    } else {
      const can = await sql<{ can_create: boolean }>`SELECT has_database_privilege(current_database(), 'CREATE') AS can_create`.execute(masqQueries(db));
      report("migrations", migrationResult(0, expected, config.migrate, { owner: null, can_create: can.rows[0]?.can_create ?? false }, who.user));
    }
  }
  const table = qualified(config.table);
  let tableExists = false;
  try {
    const t = await sql<{ oid: string | null; can_create: boolean | null }>`SELECT to_regclass(${table}) AS oid,
              (SELECT has_schema_privilege(oid, 'CREATE') FROM pg_namespace WHERE nspname = ${config.table.schema}) AS can_create`.execute(masqQueries(db));
    tableExists = t.rows[0]?.oid != null;
    if (tableExists) {
      await verifyTargetTable(db.pool, config.table);
      report("target table", { ok: `${table} has the columns masq writes` });
    } else if (t.rows[0]?.can_create === true) {
      report("target table", { ok: `${table} does not exist yet; run creates it` });
    } else {
      report("target table", {
        failed: new FatalError(`table ${table} does not exist`, {
          what: `table ${table} does not exist and this login cannot create it`,
          object: "MASQ_TABLE",
          hint: t.rows[0]?.can_create === null ? `schema ${config.table.schema} does not exist; create it or choose another table` : `create it (masq migrate as the owner does), or grant CREATE on schema ${config.table.schema}`,
        }),
      });
    }
  } catch (err) {
    report("target table", { failed: fromPostgres(err, db.target) });
  }
  if (contract !== undefined) await checkContractTables(db, contract, version === expected.last, report);
  if (version !== expected.last || !tableExists) {
    report("ingest privileges", { skipped: "checked once the migrations are applied and the table exists" });
    return true;
  }
  try {
    const missing = await missingIngestPrivileges(db.pool, config.table);
    report(
      "ingest privileges",
      missing.length === 0
        ? { ok: `role ${who.user} may do everything ingestion does` }
        : {
            failed: new FatalError(`missing privileges: ${missing.join(", ")}`, {
              what: `role ${who.user} lacks ${missing.join(", ")}`,
              object: targetText(db.target),
              hint: "GRANT masq_ingest TO the login, and INSERT on the target table (SECURITY.md, \"Roles\")",
            }),
          },
    );
  } catch (err) {
    report("ingest privileges", { failed: fromPostgres(err, db.target) });
  }
  return true;
}

/**
 * What `masq migrate --contract` would do to each table of the contract (create, add columns, register, index), or why it
 * would refuse. Registrations are read only by a login that may write them (the owner), once migrations are applied.
 */
async function checkContractTables(db: Db, contract: ContractTarget, migrated: boolean, report: Report): Promise<void> {
  try {
    const owner = migrated && (await sql<{ ok: boolean }>`SELECT has_table_privilege('masq.target_tables', 'INSERT') AS ok`.execute(masqQueries(db))).rows[0]?.ok === true;
    for (const t of await inspectContractTables(db, contract, owner)) {
      report("contract table", "failed" in t ? { failed: fromPostgres(t.failed, db.target) } : { ok: contractTableDetail(t) });
    }
  } catch (err) {
    report("contract tables", { failed: fromPostgres(err, db.target) });
  }
}

function contractTableDetail(t: Exclude<TableReport, { failed: unknown }>): string {
  const indexes = t.plan.indexes.map((i) => `${i.name} on ${i.column} (${i.purpose})`).join(", ");
  const plural = t.plan.indexes.length === 1 ? "" : "es";
  if (!t.exists) return `${t.table} does not exist yet; masq migrate --contract creates it${indexes === "" ? "" : `, with index${plural} ${indexes}`}`;
  const todo: string[] = [];
  if (t.plan.added.length > 0) todo.push(`adds column${t.plan.added.length === 1 ? "" : "s"} ${t.plan.added.join(", ")}`);
  if (t.registered === false) todo.push("registers it");
  else if (t.plan.register.length > 0) todo.push(`registers pseudonym column${t.plan.register.length === 1 ? "" : "s"} ${t.plan.register.map((p) => p.column).join(", ")}`);
  if (indexes !== "") todo.push(`creates index${plural} ${indexes}`);
  const unused = t.plan.unused.length === 0 ? "" : ` (kept, not written: ${t.plan.unused.join(", ")})`;
  if (todo.length > 0) return `${t.table} exists${unused}; masq migrate --contract ${todo.join(" and ")}`;
  return `${t.table} has the contract's columns${t.registered === true ? " and is registered" : ""}${unused}`;
}

function migrationResult(
  version: number,
  expected: { first: number; last: number },
  migrate: boolean,
  s: { owner: string | null; can_create: boolean },
  user: string,
): Result {
  if (version === expected.last) return { ok: `schema at migration ${version}, the latest this masq knows` };
  if (version > expected.last) {
    return { failed: new FatalError("schema newer than masq", { what: `the schema is at migration ${version}, newer than this masq (${expected.last})`, hint: "upgrade masq" }) };
  }
  const pending = `migrations ${Math.max(version + 1, expected.first)} to ${expected.last} are pending`;
  if (!migrate) {
    return { failed: new FatalError(pending, { what: pending, object: "MASQ_MIGRATE=false", hint: "run masq migrate (as the schema's owner) before masq run" }) };
  }
  const canApply = s.owner === null ? s.can_create : s.owner === user;
  if (canApply) return { ok: `${pending}; run applies them at start` };
  return {
    failed: new FatalError(pending, { what: `${pending} and role ${user} cannot apply them`, object: "schema masq", hint: "run masq migrate as the schema's owner first" }),
  };
}

/** The master key answers (KMS: DescribeKey) and unwraps the stored pseudonym key, and a data key where this login may read one. */
async function checkKeys(db: Db | undefined, provider: KeyProvider, config: KeysPart, pgOk: boolean, deadlineMs: number, report: Report): Promise<void> {
  const signal = AbortSignal.timeout(deadlineMs);
  let masterKeyId: string;
  try {
    masterKeyId = await provider.currentMasterKeyId(signal);
  } catch (err) {
    report("key provider", { failed: err });
    return;
  }
  if (!pgOk || db === undefined) {
    report("key provider", { ok: `master key ${masterKeyId} answers; the stored keys were not checked (no Postgres login)` });
    return;
  }
  try {
    const active = await activeVersion(db);
    if (active === undefined) {
      report("key provider", { ok: `master key ${masterKeyId} answers; no pseudonym key is stored yet (run creates version 1)` });
      return;
    }
    // The active row exists, so this only reads and unwraps (or compares MASQ_PSEUDONYM_KEY's fingerprint).
    const key = await activePseudonymKey(db.pool, provider, config.pseudonymKeyOverride, signal);
    let dataKey = "";
    const readable = await sql<{ ok: boolean }>`SELECT has_column_privilege('masq.data_keys', 'wrapped', 'SELECT') AS ok`.execute(masqQueries(db));
    if (readable.rows[0]?.ok === true) {
      const newest = await masqQueries(db).selectFrom("masq.data_keys").select("id").orderBy("created_at", "desc").limit(1).executeTakeFirst();
      if (newest !== undefined) {
        const keys = await unwrapDataKeys(db.pool, provider, [newest.id], signal, db.target);
        for (const k of keys.values()) k.fill(0);
        dataKey = " and the newest data key";
      }
    }
    report("key provider", { ok: `master key ${masterKeyId} unwraps pseudonym key version ${key.version}${dataKey}` });
  } catch (err) {
    report("key provider", { failed: fromPostgres(err, db.target) });
  }
}

/** The active pseudonym key's version; undefined when none is stored yet, or masq's tables are not there yet. */
async function activeVersion(db: Db): Promise<{ version: number } | undefined> {
  try {
    return await masqQueries(db).selectFrom("masq.pseudonym_keys").select("version").where("state", "=", "active").executeTakeFirst();
  } catch (err) {
    if ((err as { code?: string }).code === "42P01") return undefined;
    throw err;
  }
}

function finish(results: readonly Result[]): number {
  const failed = results.filter((r): r is { failed: unknown } => "failed" in r);
  if (failed.length === 0) {
    process.stdout.write("masq check: every check passed; masq run would work\n");
    return 0;
  }
  process.stdout.write(`masq check: ${failed.length} check(s) failed; masq run would not work\n`);
  return Math.max(...failed.map((f) => exitCodeFor(f.failed)));
}

async function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UnreachableError(`${what}: no answer`, { what: `${what}: no answer within ${Math.round(ms / 1000)} s`, object: "MASQ_CONNECT_TIMEOUT_SECONDS" })), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `masq check --offline`: what can be checked without AWS or Postgres, in check's format. Today that is the contract
 * file (MASQ_CONTRACT, --contract, or the shipped login contract): every error on its own line with its line and
 * column, as `vector validate` reports them. Exit 0 when it reads, 2 when it does not (a configuration error).
 */
function checkOffline(src: Sources): number {
  try {
    const loaded = loadContract(readContractFile(src), src.flags.contract === undefined ? "MASQ_CONTRACT" : "--contract");
    if (loaded.contract !== undefined) {
      process.stdout.write(`ok    contract: ${loaded.file}: ${describeContract(loaded.contract)}\n`);
      return 0;
    }
    for (const e of loaded.errors) process.stdout.write(`FAIL  contract: ${e}\n`);
    process.stdout.write(`${loaded.errors.length} error${loaded.errors.length === 1 ? "" : "s"} in ${loaded.file}\n`);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stdout.write(`FAIL  contract: ${errorLine(err).replace(/^masq: /, "")}\n`);
  }
  return 2;
}
