import type pg from "pg";
import type { Blocker } from "../db/lock-watch.ts";
import type { PgTarget } from "../db/connection.ts";
import { createDb, type Db, waitForPostgres } from "../db/pool.ts";
import { fromPostgres } from "../db/query.ts";
import { ConfigError, describeError, errorLine, exitCodeFor } from "../errors.ts";
import type { Pseudonymizer } from "../ingest/pseudonymize.ts";
import { IntegrityError, type DataKeys } from "../keys/data-keys.ts";
import type { OpenedDataKeys } from "../keys/unwrap-data-keys.ts";
import { type KeyProvider, createKeyProvider } from "../keys/key-provider.ts";
import { databaseSetting, readConnectTimeoutMs, readDatabaseUrl, readKeyConfig, settingSources, type Sources } from "../settings/config.ts";
import { onShutdownSignals } from "../signals.ts";
import { clientReported } from "./audit.ts";
import type { RotationState } from "./rotation-state.ts";

/**
 * The harness every audited lifecycle command runs in (pool, key provider, signals, the client's own account of
 * itself), the one-line refusals those commands print, the --reason they all require, and the context the passes of
 * a pseudonym key rotation share.
 */

/**
 * What every lifecycle operation works with: the pool, the key provider, a signal that the first SIGINT/SIGTERM
 * aborts, and what the client reports of itself for the audit row. The harness owns opening and closing all of it.
 */
export interface Lifecycle {
  db: Db;
  /** The configured key provider, made at the first call (or at the start, with `keys: "now"`). */
  keys: () => KeyProvider;
  signal: AbortSignal;
  /** OS user and AWS caller, labelled client-reported in the audit row; learnt once, at the first call. */
  client: () => Promise<Record<string, string>>;
  /** Where the command's settings come from (flags, environment, config file), for the settings an operation reads. */
  settings: Sources;
}

export interface HarnessOptions {
  /** "now": the key settings are read and the provider made before Postgres is reached (a wrong key setting exits 2 first). */
  keys?: "now" | "when-needed";
  poolSize?: number;
  /** Batches of a rotation's table pass can wait on row locks: more room than ingestion's 60 s. */
  statementTimeoutMs?: number;
  /** The line printed at the first SIGINT/SIGTERM, which aborts `signal`; without it, signals keep their default. */
  onStop?: string;
  /** Wait for a Postgres that is not reachable yet, up to MASQ_CONNECT_TIMEOUT_SECONDS (the default). */
  wait?: boolean;
  /** How a failure is told: by default thrown, for the CLI's one line and exit code; or a refusal printed here. */
  refuse?: (err: unknown, target: PgTarget) => number;
}

/**
 * Runs one lifecycle command: opens the key provider and the pool, reaches Postgres, runs `work`, and closes everything
 * whatever happens; its exit code, or the refusal's. The audited steps themselves (append → seal → commit, then
 * reveal or change) are audit.ts's appendSealed, called by each operation before it reveals or deletes anything.
 */
export async function runAudited(flags: Record<string, unknown>, opts: HarnessOptions, work: (lc: Lifecycle) => Promise<number>): Promise<number> {
  const src = settingSources(flags, process.env);
  let provider: KeyProvider | undefined;
  const keys = () => (provider ??= createKeyProvider(readKeyConfig(src)));
  if (opts.keys === "now") keys();
  const connectTimeoutMs = readConnectTimeoutMs(src);
  const db = createDb({
    databaseUrl: readDatabaseUrl(src),
    setting: databaseSetting(src),
    connectTimeoutMs,
    poolSize: opts.poolSize ?? 2,
    ...(opts.statementTimeoutMs !== undefined ? { statementTimeoutMs: opts.statementTimeoutMs } : {}),
  });
  const abort = new AbortController();
  const stop = opts.onStop;
  const signals =
    stop === undefined
      ? undefined
      : onShutdownSignals({
          first: (signal) => {
            process.stderr.write(`masq: ${stop}\n`);
            abort.abort(signal);
          },
        });
  let client: Promise<Record<string, string>> | undefined;
  try {
    if (opts.wait !== false) await waitForPostgres(db, { deadlineMs: connectTimeoutMs, signal: abort.signal });
    return await work({ db, keys, signal: abort.signal, client: () => (client ??= clientReported(keys())), settings: src });
  } catch (err) {
    if (opts.refuse !== undefined) return opts.refuse(err, db.target);
    throw fromPostgres(err, db.target);
  } finally {
    signals?.dispose();
    provider?.close();
    await db.close().catch(() => undefined);
  }
}

/**
 * A refusal of an audited command that may have shown or changed nothing: one line on stderr naming the role it
 * needs, and its exit code. A setting that is wrong is thrown to the CLI (exit 2).
 */
export function refusal(how: {
  /** What the command needs, after "permission denied (…): ", e.g. "reading the vault needs the masq_unmask role (…)". */
  needs: string;
  /** Inside the parentheses: the server's whole message, or only the object it was refused ("function masq.x"). */
  name: "message" | "object";
  /** What did not happen, appended to every line ("nothing was shown"). */
  nothing?: string;
  /** …or only to the permission line, when a later failure may follow committed batches ("nothing was erased"). */
  nothingOnDenial?: string;
  /** The object named when the server's message names none. */
  fallbackObject?: string;
}): (err: unknown, target: PgTarget) => number {
  return (err, target) => {
    if (err instanceof ConfigError) throw err;
    const known = fromPostgres(err, target);
    if (known instanceof ConfigError) throw known;
    const message = describeError(err);
    const tail = how.nothing === undefined ? "" : `; ${how.nothing}`;
    let line: string;
    if ((err as { code?: string }).code === "42501" || /permission denied/.test(message)) {
      const named = how.name === "message" ? (err as Error).message : (/permission denied for ([a-z]+ [\w."]+)/.exec(message)?.[1] ?? how.fallbackObject);
      line = `masq: permission denied (${named}): ${how.needs}${how.nothingOnDenial === undefined ? "" : `; ${how.nothingOnDenial}`}`;
    } else if (err instanceof IntegrityError) {
      line = `masq: ${err.message}`;
    } else {
      line = errorLine(known);
    }
    process.stderr.write(`${line}${tail}\n`);
    return exitCodeFor(known);
  };
}

/** `masq unmask`, `subject export`, `quarantine show --original`: nothing is shown when any step fails. */
export const REVEAL_REFUSAL = refusal({
  needs: "reading the vault needs the masq_unmask role (GRANT masq_unmask TO <your login>)",
  name: "message",
  nothing: "nothing was shown",
});

/** `masq subject erase`: a failure after the first batch leaves earlier batches erased (and audited), so only a denial says nothing was. */
export const ERASE_REFUSAL = refusal({
  needs: "erasing needs the masq_erase role (GRANT masq_erase TO <your login>)",
  name: "object",
  nothingOnDenial: "nothing was erased",
  fallbackObject: "masq's erase functions",
});

/** Letters, digits, punctuation and symbols: what a reader of the audit can see (not spaces, zero-width or controls). */
const VISIBLE = /[\p{L}\p{N}\p{P}\p{S}]/gu;
const MIN_VISIBLE = 3;

/** --reason: the justification every audited command records; required, and visible to a reader of the trail. */
export function readReason(flags: Record<string, unknown>): string {
  const given = typeof flags.reason === "string" ? flags.reason.trim() : "";
  const visible = given.match(VISIBLE)?.length ?? 0;
  if (given === "") throw new ConfigError("--reason", 'is required: say why, e.g. --reason "fraud case 4711"; it goes into the audit record', { what: "no justification" });
  if (visible < MIN_VISIBLE) {
    throw new ConfigError(
      "--reason",
      `is too short: it has ${visible} visible character(s), at least ${MIN_VISIBLE} are needed; say why, e.g. --reason "fraud case 4711"`,
      { what: "justification too short" },
    );
  }
  return given;
}

// The rotation's passes (vault, quarantine, tables) share one context.

/** What each pass of a pseudonym key rotation works with. */
export interface PassContext {
  pool: pg.Pool;
  state: RotationState;
  /** The new key's pseudonymizer. */
  pseudonymizer: Pseudonymizer;
  /** The old key's: a vault value is moved only if it is the old pseudonym's value (it was not planted). */
  previous: Pseudonymizer;
  /** Opens vault values and kept bodies. */
  opened: OpenedDataKeys;
  /** Encrypts vault values again under the rotation's own data key (stored in masq.data_keys). */
  dataKeys: DataKeys;
  /** Values, bodies or table rows per transaction. */
  batchSize: number;
  signal?: AbortSignal | undefined;
  /** After every committed batch: how much of this pass is done, of how much. */
  onBatch?: ((done: number, total: number) => void) | undefined;
  /** A batch ended a session of a masq role that held its rows (SECURITY.md, "Waits"). */
  onBlockerEnded?: ((b: Blocker, what: string) => void) | undefined;
}
