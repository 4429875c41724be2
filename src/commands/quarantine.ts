import { readFileSync } from "node:fs";
import { databaseSetting, readConnectTimeoutMs, readDatabaseUrl, readKeyConfig, readPseudonymKey, readTable } from "../config.ts";
import { revealing } from "../closed-stdout.ts";
import { ConfigError } from "../errors.ts";
import { fromPostgres } from "../sink/pg-errors.ts";
import { waitForPostgres } from "../sink/wait-for-postgres.ts";
import { REASON_CODES } from "../transform/reason-codes.ts";
import type { LoginRow } from "../mask/mask-event.ts";
import { sql } from "kysely";
import { masqQueries } from "../sink/masq-queries.ts";
import { createProgress } from "../progress/progress.ts";
import { prepareOutcome } from "../runner/prepare.ts";
import type { Outcome } from "../sink/write-batch.ts";
import { openAuditKey, type AuditKey } from "../lifecycle/audit-key.ts";
import { clientReported } from "../lifecycle/client-reported.ts";
import { revealBodies, SHOW_ORIGINAL } from "../lifecycle/reveal-bodies.ts";
import { query } from "../db/query.ts";
import { sealAudit } from "../lifecycle/seal-audit.ts";
import { inTransaction } from "../sink/transaction.ts";
import { printable } from "../lifecycle/unmask-output.ts";
import { readReason, withVault } from "./unmask.ts";
import type { KeyProvider } from "../vault/key-provider.ts";
import { createDb, type Db } from "../sink/db.ts";
import { replayRows, type ReplayItem, type ReplayVault } from "../lifecycle/replay-quarantine.ts";
import { IngestKeys } from "../vault/ingest-keys.ts";
import { readRotationState } from "../lifecycle/rotation-state.ts";
import { createKeyProvider } from "../vault/key-provider-from-config.ts";

/** --reason-code: one of the known codes, or exit 2 listing them (a typo would otherwise match nothing, silently). */
function readReasonCode(flags: Record<string, unknown>): string | undefined {
  // With --body-file, --reason is the audit justification of the corrected replay (quarantineReplay reads it).
  if (flags.reason !== undefined && flags.bodyFile === undefined) {
    throw new ConfigError("--reason", `is the audit justification of unmask and pseudonym, not a filter; to select by reason code use --reason-code <code> (${REASON_CODES.join(", ")})`, {
      what: "--reason does not select records",
    });
  }
  const code = typeof flags.reasonCode === "string" ? flags.reasonCode.trim() : undefined;
  if (code === undefined) return undefined;
  if (!(REASON_CODES as readonly string[]).includes(code)) {
    throw new ConfigError("--reason-code", `is not a reason code masq uses; the codes are ${REASON_CODES.join(", ")}`, { what: "unknown reason code" });
  }
  return code;
}

/** `masq quarantine list`: what is waiting, newest first. */
export async function quarantineList(flags: Record<string, unknown>): Promise<number> {
  const reasonCode = readReasonCode(flags);
  return withDb(flags, async (db) => {
    let q = masqQueries(db)
      .selectFrom("masq.quarantine")
      .select(["message_id", "reason", "detail", "body_length", "sent_at", "quarantined_at", "replayed_at"])
      .orderBy("quarantined_at", "desc")
      .limit(Number(flags.limit ?? 50));
    if (reasonCode !== undefined) q = q.where("reason", "=", reasonCode);
    if (flags.all !== true) q = q.where("replayed_at", "is", null);
    const rows = await q.execute();
    if (flags.json === true) {
      process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      return 0;
    }
    if (rows.length === 0) {
      process.stdout.write("no quarantined messages match\n");
      return 0;
    }
    for (const r of rows) {
      const replayed = r.replayed_at ? `  [replayed ${r.replayed_at.toISOString()}]` : "";
      process.stdout.write(`${r.quarantined_at.toISOString()}  ${r.reason.padEnd(20)} ${r.message_id}  ${r.detail}${replayed}\n`);
    }
    return 0;
  });
}

/** `masq quarantine show <id>`: one record, with its redacted body; with --original, its original body too (audited). */
export async function quarantineShow(messageId: string, flags: Record<string, unknown>): Promise<number> {
  if (flags.original === true) return showOriginal(messageId, flags);
  if (flags.reason !== undefined) throw new ConfigError("--reason", "goes with --original (the justification for decrypting the original body)", { what: "--reason without --original" });
  return withDb(flags, async (db) => {
    // Never the encrypted original (masq_unmask only): whether it is kept is enough here.
    const r = await masqQueries(db)
      .selectFrom("masq.quarantine")
      .select([
        "message_id",
        "reason",
        "detail",
        "body",
        "body_length",
        "sent_at",
        "received_at",
        "quarantined_at",
        "replayed_at",
        sql<boolean>`body_data_key_id IS NOT NULL`.as("original_kept_encrypted"),
      ])
      .where("message_id", "=", messageId)
      .executeTakeFirst();
    if (r === undefined) {
      // The id is not echoed: what was typed may be a value rather than an id (PII in a terminal's scrollback).
      process.stderr.write("masq: no such quarantined message (the <message-id> given): masq quarantine list --all shows the ids\n");
      return 1;
    }
    let body: unknown = r.body;
    try {
      body = r.body === null ? null : JSON.parse(r.body);
    } catch {
      // stored as text; show it as it is
    }
    const record = { ...r, body };
    process.stdout.write(flags.json === true ? `${JSON.stringify(record, null, 2)}\n` : renderRecord(record));
    return 0;
  });
}

/**
 * `masq quarantine show <id> --original --reason "…"`: the body as it was received, decrypted, so that an operator
 * can see why it was refused and write a corrected one for `quarantine replay --body-file`. A reveal like unmask
 * (masq_unmask, action 'quarantine-original'): the audit row commits before the body is shown. In the text form the
 * body's control characters are shown escaped (a terminal must not act on ESC); --json gives it exactly.
 */
async function showOriginal(messageId: string, flags: Record<string, unknown>): Promise<number> {
  const reason = readReason(flags);
  return withVault(flags, async ({ db, provider, client }) => {
    const r = await masqQueries(db)
      .selectFrom("masq.quarantine")
      .select(["message_id", "reason", "detail", "received_at", "replayed_at", sql<boolean>`body_data_key_id IS NOT NULL`.as("has_original")])
      .where("message_id", "=", messageId)
      .executeTakeFirst();
    if (r === undefined) {
      process.stderr.write("masq: no such quarantined message (the <message-id> given): masq quarantine list --all shows the ids\n");
      return 1;
    }
    if (!r.has_original) {
      process.stderr.write(
        "masq: this record keeps no original body (quarantined before masq kept encrypted originals, or too large to store): " +
          "masq quarantine show <message-id> shows its redacted copy; nothing was revealed\n",
      );
      return 1;
    }
    const auditKey = await openAuditKey(db.pool, provider);
    let original: string | undefined;
    try {
      original = (await revealBodies(db.pool, provider, auditKey, { reason, selector: { messages: 1 }, client, messageIds: [messageId] }, SHOW_ORIGINAL)).get(messageId);
    } finally {
      auditKey.key.fill(0);
    }
    if (original === undefined) {
      process.stderr.write("masq: the original body went while it was being revealed (replayed and pruned, or erased); nothing was shown\n");
      return 1;
    }
    const record = { message_id: r.message_id, reason: r.reason, detail: r.detail, received_at: r.received_at, replayed_at: r.replayed_at };
    revealing("original body");
    if (flags.json === true) {
      process.stdout.write(`${JSON.stringify({ ...record, original }, null, 2)}\n`);
    } else {
      const lines = Object.entries(record).map(([k, v]) => `${k.padEnd(15)} ${v instanceof Date ? v.toISOString() : v === null ? "—" : printable(String(v))}`);
      lines.push("original (as received; control characters shown escaped):", printable(original));
      process.stdout.write(`${lines.join("\n")}\n`);
    }
    return 0;
  });
}

function renderRecord(r: Record<string, unknown>): string {
  const lines = Object.entries(r)
    .filter(([k]) => k !== "body")
    .map(([k, v]) => `${k.padEnd(15)} ${v instanceof Date ? v.toISOString() : v === null || v === undefined ? "—" : JSON.stringify(v)}`);
  lines.push(`body (redacted: only user_id, device_type, locale, app_version kept; ip, device_id as pseudonyms):`, r.body === null ? "  (not kept: the body was not JSON)" : JSON.stringify(r.body, null, 2));
  return `${lines.join("\n")}\n`;
}

/**
 * `masq quarantine replay`: loads quarantined messages after all, through the same validate/mask/vault path as
 * ingestion, with the active pseudonym key.
 *  - a record with its original body kept (encrypted): the original is decrypted and validated again; it loads if
 *    masq now accepts it (a validator fixed), and stays quarantined, with its reason, if not;
 *  - db_rejected records hold the masked row itself: it loads once the table accepts it (a constraint fixed);
 *  - --body-file: one record (--id) with a corrected body instead of its original.
 * Decrypting originals is a reveal, audited like `masq unmask`; writing is what ingestion does: a login holding both
 * masq_unmask and masq_ingest (or the owner), and the master key's decrypt rights.
 */
/** The audit reason of `replay --body-file` without --reason (the replay of the original is "quarantine replay"). */
export const CORRECTED_REPLAY_REASON = "quarantine replay with a corrected body (no --reason given)";

export async function quarantineReplay(flags: Record<string, unknown>): Promise<number> {
  const ids = Array.isArray(flags.id) ? (flags.id as string[]) : [];
  const reason = readReasonCode(flags);
  const all = flags.all === true;
  const bodyFile = typeof flags.bodyFile === "string" ? flags.bodyFile : undefined;
  if (bodyFile !== undefined && ids.length !== 1) throw new ConfigError("--body-file", "goes with exactly one --id");
  // A corrected replay is always audited; --reason is its justification, and without one the record says so.
  const auditReason = bodyFile === undefined ? undefined : flags.reason === undefined ? CORRECTED_REPLAY_REASON : readReason(flags);
  if (ids.length === 0 && reason === undefined && !all) throw new ConfigError("--id/--reason-code/--all", "say which records to replay");
  const table = readTable(flags, process.env);
  let correctedBody: string | undefined;
  if (bodyFile !== undefined) {
    try {
      correctedBody = readFileSync(bodyFile, "utf8");
    } catch (err) {
      throw new ConfigError("--body-file", `cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`);
    }
  }
  return withDb(flags, async (db) => {
    const pending = () => {
      let q = masqQueries(db).selectFrom("masq.quarantine").where("replayed_at", "is", null);
      if (ids.length > 0) q = q.where("message_id", "in", ids);
      if (reason !== undefined) q = q.where("reason", "=", reason);
      return q;
    };
    const missing = await missingReplayRoles(db);
    if (missing.length > 0) {
      process.stderr.write(
        `masq: quarantine replay reads originals (masq_unmask) and writes as ingestion does (masq_ingest); this login lacks ${missing.join(" and ")}: ` +
          `GRANT ${missing.join(", ")} TO <your login>\n`,
      );
      return 1;
    }
    const rotation = await readRotationState(db.pool);
    if (rotation !== undefined) {
      // Its passes rewrite the quarantine and the vault under the new key while a replay would write under either.
      process.stderr.write(
        `masq: a pseudonym key rotation (version ${rotation.fromVersion} to ${rotation.toVersion}, ${rotation.phase} pass) is in progress; ` +
          "replay after it has finished (masq rotate pseudonym-key --resume finishes it)\n",
      );
      return 1;
    }
    const total = Number((await pending().select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);
    const dryRun = flags.dryRun === true;
    // A bar with rate and ETA on a terminal; the summary line below either way.
    const bar = dryRun ? undefined : createProgress("replaying", { unit: "records" });
    bar?.setBacklog(total);
    const sum = { wouldReplay: 0, replayed: 0, skipped: 0, refused: new Map<string, string>(), cannot: 0, stillRejected: new Map<string, number>() };
    const keys = lazyIngestKeys(db);
    try {
      if (auditReason !== undefined && total > 0 && !dryRun) await auditCorrectedReplay(db, keys, ids[0]!, auditReason, correctedBody!.length);
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
        const page = await prepareReplay(db, records, correctedBody, keys, { seal: !dryRun });
        sum.cannot += page.cannot;
        for (const [why, n] of page.stillRejected) sum.stillRejected.set(why, (sum.stillRejected.get(why) ?? 0) + n);
        if (correctedBody !== undefined && page.items.length === 0) {
          process.stderr.write(`masq: the corrected body is still rejected: ${[...page.stillRejected.keys()].join(", ")}\n`);
          return 1;
        }
        if (dryRun) {
          sum.wouldReplay += page.items.length;
        } else {
          const r = await replayRows(db.pool, table, page.items, page.vault);
          sum.replayed += r.replayed;
          sum.skipped += r.skipped;
          for (const [id, why] of r.refused) sum.refused.set(id, why);
        }
        bar?.committed({ size: records.length, seconds: 0, written: records.length, duplicates: 0, quarantinedByReason: {}, lagSeconds: [] });
        done += records.length;
        bar?.setBacklog(Math.max(0, total - done));
        if (fetched.length < REPLAY_PAGE && records.length === fetched.length) break;
      }
    } finally {
      bar?.stop();
      keys.close();
    }
    if (sum.cannot > 0) {
      process.stderr.write(
        `masq: ${sum.cannot} record(s) have no original body kept (quarantined before masq kept encrypted originals, or not storable): ` +
          `replay one with a corrected body: masq quarantine replay --id <message_id> --body-file <file>\n`,
      );
    }
    const rejectedText = [...sum.stillRejected].map(([why, n]) => `${why} ${n}`).join(", ");
    if (dryRun) {
      process.stdout.write(`would replay ${sum.wouldReplay} record(s)${rejectedText ? `; still rejected: ${rejectedText}` : ""}\n`);
      return 0;
    }
    process.stdout.write(
      `replayed ${sum.replayed}, already replayed or gone ${sum.skipped}, refused by the table ${sum.refused.size}` +
        `${rejectedText ? `, still rejected by masq (left quarantined): ${rejectedText}` : ""}\n`,
    );
    for (const [id, why] of sum.refused) process.stdout.write(`  ${id}: ${why}\n`);
    // Exit 1 when any selected record stays quarantined, so a script notices.
    return sum.refused.size > 0 || sum.cannot > 0 || sum.stillRejected.size > 0 ? 1 : 0;
  });
}

/**
 * The audit row of a replay with a corrected body (who, when, why, which record), committed before the body is
 * loaded. It names no subject: nothing is revealed, the operator brings the body.
 */
async function auditCorrectedReplay(db: Db, lazyKeys: ReturnType<typeof lazyIngestKeys>, messageId: string, reason: string, bodyLength: number): Promise<void> {
  const { auditKey, client } = await lazyKeys.get();
  await inTransaction(db.pool, async (c) => {
    const r = await query<{ seq: string }>(c, "SELECT masq.audit_replay_corrected($1, $2, $3, $4, $5)::text AS seq", [
      reason,
      JSON.stringify({ body_length: bodyLength }),
      JSON.stringify(client),
      messageId,
      auditKey.version,
    ]);
    await sealAudit(c, auditKey, r.rows[0]!.seq);
  });
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

interface ReplayRecord {
  message_id: string;
  reason: string;
  body: string | null;
  sent_at: Date | null;
  received_at: Date;
  has_original: boolean;
}

/** The keys for a replay, opened at the first page that needs them (db_rejected rows need none). */
interface ReplayKeys {
  keys: IngestKeys;
  provider: KeyProvider;
  auditKey: AuditKey;
  client: Record<string, string>;
}

function lazyIngestKeys(db: Db): { get(): Promise<ReplayKeys>; close(): void } {
  let opened: Promise<ReplayKeys> | undefined;
  let provider: KeyProvider | undefined;
  let keys: IngestKeys | undefined;
  let auditKey: AuditKey | undefined;
  return {
    get() {
      opened ??= (async () => {
        const keyConfig = readKeyConfig(process.env);
        provider = createKeyProvider(keyConfig);
        keys = await IngestKeys.open({ pool: db.pool, provider, pseudonymKeyOverride: readPseudonymKey(process.env), limits: keyConfig.limits });
        auditKey = await openAuditKey(db.pool, provider);
        return { keys, provider, auditKey, client: await clientReported(provider) };
      })();
      return opened;
    },
    close() {
      keys?.close();
      auditKey?.key.fill(0);
      provider?.close();
    },
  };
}

/**
 * One page of a replay: what loads (rows masked and sealed again under the active key, or db_rejected rows as
 * they were kept), what masq still rejects, by reason, and how many records have nothing to replay from.
 */
async function prepareReplay(
  db: Db,
  records: readonly ReplayRecord[],
  correctedBody: string | undefined,
  lazyKeys: ReturnType<typeof lazyIngestKeys>,
  opts: { seal: boolean },
): Promise<{ items: ReplayItem[]; vault: ReplayVault | undefined; stillRejected: Map<string, number>; cannot: number }> {
  const items: ReplayItem[] = [];
  const stillRejected = new Map<string, number>();
  let cannot = 0;
  let vault: ReplayVault | undefined;
  const fromOriginal = (r: ReplayRecord) => correctedBody !== undefined || (r.reason !== "db_rejected" && r.has_original);
  if (records.some(fromOriginal)) {
    const { keys, provider, auditKey, client } = await lazyKeys.get();
    // Every decrypted original is a reveal: one audit row per page names the records (lifecycle/reveal-bodies.ts).
    const originals =
      correctedBody === undefined
        ? await revealBodies(db.pool, provider, auditKey, {
            reason: "quarantine replay",
            selector: { messages: records.filter(fromOriginal).length },
            client,
            messageIds: records.filter(fromOriginal).map((r) => r.message_id),
          })
        : new Map<string, string>();
    const outcomes: Outcome[] = [];
    for (const r of records) {
      if (!fromOriginal(r)) continue;
      const body = correctedBody ?? originals.get(r.message_id);
      if (body === undefined) continue;
      const o = prepareOutcome({ messageId: r.message_id, body, sentAt: r.sent_at, receivedAt: r.received_at }, keys.pseudonym.pseudonymizer);
      if (o.kind === "row") outcomes.push(o);
      else stillRejected.set(o.reason, (stillRejected.get(o.reason) ?? 0) + 1);
    }
    // A dry run only counts: sealing would draw (and store) a data key for values it does not write.
    const sealed = opts.seal ? await keys.sealer.seal(outcomes, keys.pseudonym.version) : { keyVersion: keys.pseudonym.version, vault: [], outcomes };
    vault = { keyVersion: sealed.keyVersion, entries: sealed.vault };
    for (const o of sealed.outcomes) if (o.kind === "row") items.push({ messageId: o.messageId, row: o.row });
  }
  for (const r of records) {
    if (fromOriginal(r)) continue;
    if (r.reason === "db_rejected" && r.body !== null) items.push({ messageId: r.message_id, row: JSON.parse(r.body) as LoginRow });
    else cannot++;
  }
  return { items, vault, stillRejected, cannot };
}

/** The masq roles a replay needs that the current role neither holds nor owns masq's schema (the owner may do all). */
async function missingReplayRoles(db: Db): Promise<string[]> {
  const { rows } = await db.pool.query<{ owner: boolean; unmask: boolean; ingest: boolean }>(
    `SELECT pg_has_role(current_user, (SELECT nspowner FROM pg_namespace WHERE nspname = 'masq'), 'USAGE') AS owner,
            pg_has_role(current_user, 'masq_unmask', 'USAGE') AS unmask, pg_has_role(current_user, 'masq_ingest', 'USAGE') AS ingest`,
  );
  const r = rows[0]!;
  if (r.owner) return [];
  return [...(r.unmask ? [] : ["masq_unmask"]), ...(r.ingest ? [] : ["masq_ingest"])];
}

/** A pool for one command: reached within MASQ_CONNECT_TIMEOUT_SECONDS; failures go to the CLI's one line. */
async function withDb(flags: Record<string, unknown>, fn: (db: Db) => Promise<number>): Promise<number> {
  const connectTimeoutMs = readConnectTimeoutMs(process.env);
  const db = createDb({ databaseUrl: readDatabaseUrl(flags, process.env), setting: databaseSetting(flags, process.env), connectTimeoutMs, poolSize: 2 });
  try {
    await waitForPostgres(db, { deadlineMs: connectTimeoutMs });
    return await fn(db);
  } catch (err) {
    throw fromPostgres(err, db.target);
  } finally {
    await db.close().catch(() => undefined);
  }
}
