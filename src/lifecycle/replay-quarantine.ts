import { sql } from "kysely";
import type pg from "pg";
import { readKeyConfig, readPseudonymKey } from "../settings/config.ts";
import { classified } from "../db/query.ts";
import type { Db } from "../db/pool.ts";
import { masqQueries } from "../db/schema.ts";
import { otherContractTables } from "../db/other-contract-tables.ts";
import type { TableName } from "../db/tables.ts";
import { verifyContractTables } from "../db/verify-contract-tables.ts";
import type { ContractPlan } from "../ingest/contract-plan.ts";
import { IngestKeys } from "../keys/ingest-keys.ts";
import type { KeyProvider } from "../keys/key-provider.ts";
import { openAuditKey, type AuditKey } from "../keys/audit-key.ts";
import type { Lifecycle } from "./audited-command.ts";
import { revealOriginals } from "./reveal-originals.ts";
import { readRotationState } from "./rotation-state.ts";
import { appendSealed } from "./audit.ts";
import { contractRoute } from "./replay-contract.ts";
import { loginRoute } from "./replay-login.ts";
import type { PreparedPage, ReplayRecord, ReplayRoute } from "./replay-route.ts";

/** The audit reason of `replay --body-file` without --reason (the replay of the original is "quarantine replay"). */
export const CORRECTED_REPLAY_REASON = "quarantine replay with a corrected body (no --reason given)";

export interface ReplayRequest {
  ids: string[];
  reasonCode: string | undefined;
  table: TableName;
  dryRun: boolean;
  /** --body-file's content: replaces the original of the one record (ids[0]). */
  correctedBody: string | undefined;
  /** The justification of a corrected replay, which is always audited. */
  auditReason: string | undefined;
  /** --contract / MASQ_CONTRACT naming a contract other than the shipped login contract: its records are replayed, not the login's. */
  contract: ContractPlan | undefined;
}

/** Why a replay replays nothing, in one line: exit 1 (a role missing, a rotation, a body still rejected) or 2 (a usage error). */
export interface ReplayRefusal {
  refusal: string;
  exitCode?: 2;
}

export interface ReplaySummary {
  wouldReplay: number;
  replayed: number;
  skipped: number;
  /** Refused by the table: message id → the database's reason. */
  refused: Map<string, string>;
  /** Records with no original kept and no corrected body: nothing to replay from. */
  cannot: number;
  /** A contract's db_rejected records: they keep the masked row, not the original; only a corrected body replays them. */
  rowsOnly: number;
  /** Still rejected by masq's validation (or the contract), by reason code. */
  stillRejected: Map<string, number>;
  /** Selected records of the other route, left as they are: a contract's without a contract, the login's with one. */
  otherRoute: number;
}

/**
 * `masq quarantine replay`: loads quarantined messages after all, through the same validate/mask/vault path as
 * ingestion, with the active pseudonym key.
 *  - a record with its original body kept (encrypted): the original is decrypted and validated again; it loads if
 *    masq now accepts it (a validator fixed), and stays quarantined, with its reason, if not;
 *  - db_rejected records hold the masked row itself: it loads once the table accepts it (a constraint fixed); a
 *    contract's keep no event type with it, and load only from a corrected body;
 *  - a corrected body: one record with the operator's body instead of its original.
 * Each record by the route of the path that quarantined it (replay-route.ts): without a contract the login's records
 * by the login parser into the login table; with one (req.contract) the contract's records by the contract into
 * each event type's table. The other route's records are left as they are, and counted.
 * Decrypting originals is a reveal, audited like `masq unmask`; writing is what ingestion does: a login holding both
 * masq_unmask and masq_ingest (or the owner), and the master key's decrypt rights. A refusal (roles missing, a
 * rotation in progress, a corrected body still rejected; exit 1) is one line and replays nothing, and so is a
 * selection by --all or --reason-code with a contract when another contract's tables are registered too (exit 2).
 */
export async function replayQuarantine(
  lc: Lifecycle,
  req: ReplayRequest,
  progress: { total(n: number): void; page(records: number, done: number): void },
): Promise<ReplayRefusal | ReplaySummary> {
  const pool = lc.db.pool;
  const route: ReplayRoute = req.contract === undefined ? loginRoute(req.table) : contractRoute(req.contract);
  const selected = (contract: boolean) => {
    let q = masqQueries(lc.db).selectFrom("masq.quarantine").where("replayed_at", "is", null).where("pseudonyms", contract ? "is not" : "is", null);
    if (req.ids.length > 0) q = q.where("message_id", "in", req.ids);
    if (req.reasonCode !== undefined) q = q.where("reason", "=", req.reasonCode);
    return q;
  };
  const pending = () => selected(route.contract);
  const missing = await missingReplayRoles(lc.db);
  if (missing.length > 0) {
    return {
      refusal:
        `quarantine replay reads originals (masq_unmask) and writes as ingestion does (masq_ingest); this login lacks ${missing.join(" and ")}: ` +
        `GRANT ${missing.join(", ")} TO <your login>`,
    };
  }
  if (req.contract !== undefined && req.ids.length === 0) {
    // A contract's record says only that a contract refused it (pseudonyms set), not which: with another contract's
    // tables in the database, --all would decrypt (and audit) that contract's originals for nothing, and load any
    // that this contract accepts into this contract's tables. Records chosen by --id are the operator's to vouch for.
    const others = await otherContractTables(pool, req.contract.tables.map((t) => t.table), req.table);
    if (others.length > 0) {
      return {
        refusal:
          `cannot tell this contract's quarantined records from another contract's (${req.reasonCode === undefined ? "--all" : "--reason-code"}): ` +
          `the database also has table(s) ${others.join(", ")}, which this contract does not write, and a record does not say which contract refused it; ` +
          "replay the records you have checked are this contract's by --id <message_id>",
        exitCode: 2,
      };
    }
  }
  const rotation = await readRotationState(pool);
  if (rotation !== undefined) {
    // Its passes rewrite the quarantine and the vault under the new key while a replay would write under either.
    return {
      refusal:
        `a pseudonym key rotation (version ${rotation.fromVersion} to ${rotation.toVersion}, ${rotation.phase} pass) is in progress; ` +
        "replay after it has finished (masq rotate pseudonym-key --resume finishes it)",
    };
  }
  const count = async (contract: boolean) => Number((await selected(contract).select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);
  const total = await count(route.contract);
  // As `masq run` does at start: each table exists with the contract's columns and is registered as it writes it.
  if (req.contract !== undefined && total > 0) await verifyContractTables(pool, req.contract);
  progress.total(total);
  const sum: ReplaySummary = { wouldReplay: 0, replayed: 0, skipped: 0, refused: new Map(), cannot: 0, rowsOnly: 0, stillRejected: new Map(), otherRoute: await count(!route.contract) };
  const keys = lazyIngestKeys(lc);
  try {
    if (req.auditReason !== undefined && total > 0 && !req.dryRun) await auditCorrectedReplay(pool, keys, req.ids[0]!, req.auditReason, req.correctedBody!.length);
    // Page by page, in message id order, so that memory stays bounded however many records are selected.
    let after: string | undefined;
    let done = 0;
    for (;;) {
      let q = pending()
        // body_data_key_id is set exactly when the original is kept (the ciphertext column is the owner's only).
        .select(["message_id", "reason", "body", "body_length", "sent_at", "received_at", sql<boolean>`body_data_key_id IS NOT NULL`.as("has_original")])
        .orderBy("message_id")
        .limit(REPLAY_PAGE);
      if (after !== undefined) q = q.where("message_id", ">", after);
      const fetched = await q.execute();
      if (fetched.length === 0) break;
      const records = withinBytes(fetched, REPLAY_PAGE_BYTES);
      after = records.at(-1)!.message_id;
      const page = await preparePage(pool, route, records, req.correctedBody, keys, { seal: !req.dryRun });
      sum.cannot += page.cannot;
      sum.rowsOnly += page.rowsOnly;
      for (const [why, n] of page.stillRejected) sum.stillRejected.set(why, (sum.stillRejected.get(why) ?? 0) + n);
      if (req.correctedBody !== undefined && page.loads === 0) return { refusal: `the corrected body is still rejected: ${[...page.stillRejected.keys()].join(", ")}` };
      if (req.dryRun) {
        sum.wouldReplay += page.loads;
      } else {
        const r = await page.write(pool);
        sum.replayed += r.replayed;
        sum.skipped += r.skipped;
        for (const [id, why] of r.refused) sum.refused.set(id, why);
      }
      done += records.length;
      progress.page(records.length, done);
      if (fetched.length < REPLAY_PAGE && records.length === fetched.length) break;
    }
  } finally {
    keys.close();
  }
  return sum;
}

/**
 * The audit row of a replay with a corrected body (who, when, why, which record), committed before the body is
 * loaded. It names no subject: nothing is revealed, the operator brings the body.
 */
async function auditCorrectedReplay(pool: pg.Pool, lazyKeys: LazyKeys, messageId: string, reason: string, bodyLength: number): Promise<void> {
  const { auditKey, client } = await lazyKeys.get();
  const selector = JSON.stringify({ body_length: bodyLength });
  await appendSealed(pool, auditKey, sql<{ seq: string }>`SELECT masq.audit_replay_corrected(${reason}, ${selector}, ${JSON.stringify(client)}, ${messageId}, ${auditKey.version})::text AS seq`);
}

/** Records read, decrypted, validated and sealed at a time by `quarantine replay`. */
const REPLAY_PAGE = 1000;
/** …and at most this many bytes of originals: 1,000 quarantined 1 MiB bodies must not be decrypted at once. */
export const REPLAY_PAGE_BYTES = 32 * 1024 * 1024;

/** The longest prefix of `records` whose original bodies fit in maxBytes (always at least the first record). */
export function withinBytes<T extends { body_length: number | null }>(records: readonly T[], maxBytes: number): T[] {
  let bytes = 0;
  let n = 0;
  for (const r of records) {
    bytes += r.body_length ?? 0;
    if (n > 0 && bytes > maxBytes) break;
    n++;
  }
  return records.slice(0, n);
}

/** The keys for a replay, opened at the first page that needs them (db_rejected rows need none). */
interface ReplayKeys {
  keys: IngestKeys;
  provider: KeyProvider;
  auditKey: AuditKey;
  client: Record<string, string>;
}

interface LazyKeys {
  get(): Promise<ReplayKeys>;
  close(): void;
}

function lazyIngestKeys(lc: Lifecycle): LazyKeys {
  let opened: Promise<ReplayKeys> | undefined;
  let keys: IngestKeys | undefined;
  let auditKey: AuditKey | undefined;
  return {
    get() {
      opened ??= (async () => {
        const provider = lc.keys();
        keys = await IngestKeys.open({ pool: lc.db.pool, provider, pseudonymKeyOverride: readPseudonymKey(lc.settings), limits: readKeyConfig(lc.settings).limits });
        auditKey = await openAuditKey(lc.db.pool, provider);
        return { keys, provider, auditKey, client: await lc.client() };
      })();
      return opened;
    },
    close() {
      keys?.close();
      auditKey?.key.fill(0);
    },
  };
}

/**
 * One page of a replay, prepared by its route: the bodies of the records it replays from a body are decrypted first
 * (each page's originals a reveal, one audit row naming the records: reveal-originals.ts), or the corrected body.
 */
async function preparePage(pool: pg.Pool, route: ReplayRoute, records: readonly ReplayRecord[], correctedBody: string | undefined, lazyKeys: LazyKeys, opts: { seal: boolean }): Promise<PreparedPage> {
  const corrected = correctedBody !== undefined;
  const read = records.filter((r) => route.fromBody(r, corrected));
  if (read.length === 0) return route.prepare(records, new Map(), undefined, { ...opts, corrected });
  const { keys, provider, auditKey, client } = await lazyKeys.get();
  const bodies = corrected
    ? new Map(read.map((r) => [r.message_id, correctedBody]))
    : await revealOriginals(pool, provider, auditKey, { reason: "quarantine replay", selector: { messages: read.length }, client, messageIds: read.map((r) => r.message_id) });
  return route.prepare(records, bodies, keys, { ...opts, corrected });
}

/** The masq roles a replay needs that the current role neither holds nor owns masq's schema (the owner may do all). */
async function missingReplayRoles(db: Db): Promise<string[]> {
  const r = (
    await classified(
      sql<{ owner: boolean; unmask: boolean; ingest: boolean }>`SELECT pg_has_role(current_user, (SELECT nspowner FROM pg_namespace WHERE nspname = 'masq'), 'USAGE') AS owner,
        pg_has_role(current_user, 'masq_unmask', 'USAGE') AS unmask, pg_has_role(current_user, 'masq_ingest', 'USAGE') AS ingest`.execute(masqQueries(db)),
    )
  ).rows[0]!;
  if (r.owner) return [];
  return [...(r.unmask ? [] : ["masq_unmask"]), ...(r.ingest ? [] : ["masq_ingest"])];
}
