import { readFileSync } from "node:fs";
import { sql } from "kysely";
import { readContractFile, readTable, settingSources } from "../settings/config.ts";
import { revealing } from "../log.ts";
import { ConfigError } from "../errors.ts";
import { readReason, REVEAL_REFUSAL, runAudited } from "../lifecycle/audited-command.ts";
import { CORRECTED_REPLAY_REASON, replayQuarantine } from "../lifecycle/replay-quarantine.ts";
import { showOriginal } from "../lifecycle/reveal-originals.ts";
import { printable } from "../lifecycle/unmask.ts";
import { createProgress, type Progress } from "../ops/progress.ts";
import { masqQueries } from "../db/schema.ts";
import { REASON_CODES as LOGIN_REASON_CODES } from "../ingest/login-event.ts";
import { CONTRACT_REASON_CODES } from "../contracts/compile-contract.ts";

/** Every code a record can have: login's, and those only a contract gives. */
const REASON_CODES: readonly string[] = [...LOGIN_REASON_CODES, ...CONTRACT_REASON_CODES];

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
  if (!REASON_CODES.includes(code)) {
    throw new ConfigError("--reason-code", `is not a reason code masq uses; the codes are ${REASON_CODES.join(", ")}`, { what: "unknown reason code" });
  }
  return code;
}

/** `masq quarantine list`: what is waiting, newest first. */
export async function quarantineList(flags: Record<string, unknown>): Promise<number> {
  const reasonCode = readReasonCode(flags);
  return runAudited(flags, {}, async ({ db }) => {
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
  if (flags.original === true) return quarantineShowOriginal(messageId, flags);
  if (flags.reason !== undefined) throw new ConfigError("--reason", "goes with --original (the justification for decrypting the original body)", { what: "--reason without --original" });
  return runAudited(flags, {}, async ({ db }) => {
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
 * `masq quarantine show <id> --original --reason "…"`: the original body, decrypted and audited
 * (lifecycle/reveal-originals.ts). In the text form the body's control characters are shown escaped (a terminal
 * must not act on ESC); --json gives it exactly.
 */
async function quarantineShowOriginal(messageId: string, flags: Record<string, unknown>): Promise<number> {
  const reason = readReason(flags);
  return runAudited(flags, { keys: "now", refuse: REVEAL_REFUSAL }, async (lc) => {
    const r = await showOriginal(lc, messageId, reason);
    if ("refused" in r) {
      process.stderr.write(`masq: ${r.refused}\n`);
      return 1;
    }
    revealing("original body");
    if (flags.json === true) {
      process.stdout.write(`${JSON.stringify({ ...r.record, original: r.original }, null, 2)}\n`);
    } else {
      const lines = Object.entries(r.record).map(([k, v]) => `${k.padEnd(15)} ${v instanceof Date ? v.toISOString() : v === null ? "—" : printable(String(v))}`);
      lines.push("original (as received; control characters shown escaped):", printable(r.original));
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

/** `masq quarantine replay` (lifecycle/replay-quarantine.ts): selects the records, replays them, prints what happened. */
export async function quarantineReplay(flags: Record<string, unknown>): Promise<number> {
  const src = settingSources(flags, process.env);
  const ids = Array.isArray(flags.id) ? (flags.id as string[]) : [];
  const reason = readReasonCode(flags);
  const all = flags.all === true;
  const bodyFile = typeof flags.bodyFile === "string" ? flags.bodyFile : undefined;
  if (bodyFile !== undefined && ids.length !== 1) throw new ConfigError("--body-file", "goes with exactly one --id");
  // A corrected replay is always audited; --reason is its justification, and without one the record says so.
  const auditReason = bodyFile === undefined ? undefined : flags.reason === undefined ? CORRECTED_REPLAY_REASON : readReason(flags);
  if (ids.length === 0 && reason === undefined && !all) throw new ConfigError("--id/--reason-code/--all", "say which records to replay");
  const table = readTable(src);
  // A contract other than login's is read and compiled once, as `masq run` does (exit 2 for a file that does not
  // read); its records are then replayed by it, and the login's left alone.
  const contractFile = readContractFile(src);
  const contract = contractFile === undefined ? undefined : (await import("../ingest/run-contract.ts")).openRunContract(contractFile, flags.contract === undefined ? "MASQ_CONTRACT" : "--contract")?.writer.plan;
  let correctedBody: string | undefined;
  if (bodyFile !== undefined) {
    try {
      correctedBody = readFileSync(bodyFile, "utf8");
    } catch (err) {
      throw new ConfigError("--body-file", `cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`);
    }
  }
  return runAudited(flags, {}, async (lc) => {
    const dryRun = flags.dryRun === true;
    // A bar with rate and ETA on a terminal; the summary line below either way.
    let bar: Progress | undefined;
    let total = 0;
    let result;
    try {
      result = await replayQuarantine(lc, { ids, reasonCode: reason, table, dryRun, correctedBody, auditReason, contract }, {
        total: (n) => {
          total = n;
          bar = dryRun ? undefined : createProgress("replaying", { unit: "records" });
          bar?.setBacklog(n);
        },
        page: (records, done) => {
          bar?.committed({ size: records, seconds: 0, written: records, duplicates: 0, quarantinedByReason: {}, lagSeconds: [] });
          bar?.setBacklog(Math.max(0, total - done));
        },
      });
    } finally {
      bar?.stop();
    }
    if ("refusal" in result) {
      process.stderr.write(`masq: ${result.refusal}\n`);
      return result.exitCode ?? 1;
    }
    const sum = result;
    if (sum.cannot > 0) {
      process.stderr.write(
        `masq: ${sum.cannot} record(s) have no original body kept (quarantined before masq kept encrypted originals, or not storable): ` +
          `replay one with a corrected body: masq quarantine replay --id <message_id> --body-file <file>\n`,
      );
    }
    if (sum.rowsOnly > 0) {
      process.stderr.write(
        `masq: ${sum.rowsOnly} record(s) refused by a contract's table keep the masked row, not the original body: ` +
          `replay one with a corrected body: masq quarantine replay --id <message_id> --body-file <file> --contract <file>\n`,
      );
    }
    const rejectedText = [...sum.stillRejected].map(([why, n]) => `${why} ${n}`).join(", ");
    // The other route's records: never replayed by this one (a contract's by the login parser, or the reverse).
    const otherRoute =
      sum.otherRoute === 0
        ? ""
        : contract === undefined
          ? `left quarantined: ${sum.otherRoute} record(s) of a privacy contract, which the login path does not replay: replay them with --contract <file>\n`
          : `left quarantined: ${sum.otherRoute} login record(s), which a contract does not replay: replay them without --contract or MASQ_CONTRACT\n`;
    if (dryRun) {
      process.stdout.write(`would replay ${sum.wouldReplay} record(s)${rejectedText ? `; still rejected: ${rejectedText}` : ""}\n${otherRoute}`);
      return 0;
    }
    process.stdout.write(
      `replayed ${sum.replayed}, already replayed or gone ${sum.skipped}, refused by the table ${sum.refused.size}` +
        `${rejectedText ? `, still rejected by masq (left quarantined): ${rejectedText}` : ""}\n`,
    );
    for (const [id, why] of sum.refused) process.stdout.write(`  ${id}: ${why}\n`);
    process.stdout.write(otherRoute);
    // Exit 1 when any selected record stays quarantined, so a script notices.
    return sum.refused.size > 0 || sum.cannot > 0 || sum.rowsOnly > 0 || sum.stillRejected.size > 0 || sum.otherRoute > 0 ? 1 : 0;
  });
}
