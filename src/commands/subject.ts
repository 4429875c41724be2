/**
 * The data subject's commands (GDPR Art. 15 and 17): `masq subject export` and `masq subject erase`. Both act on every
 * registered table unless one is named, and the audit trail names the user only by a keyed fingerprint.
 */
import { once } from "node:events";
import { endedLine } from "../db/lock-watch.ts";
import type { TableName } from "../db/tables.ts";
import { ConfigError } from "../errors.ts";
import { readReason, REVEAL_REFUSAL, runAudited, ERASE_REFUSAL } from "../lifecycle/audited-command.ts";
import { eraseUser, type ErasureCounts } from "../lifecycle/erase-subject.ts";
import { ExportWriter, type ExportLine } from "../lifecycle/export-output.ts";
import { exportUser } from "../lifecycle/export-subject.ts";
import { readFormat } from "../lifecycle/unmask.ts";
import { revealing } from "../log.ts";
import { createProgress, type Progress } from "../ops/progress.ts";
import { readNamedTable, readPseudonymKey, settingSources } from "../settings/config.ts";

/** Rows read, decrypted and written at a time: memory stays bounded however many rows the user has. */
const EXPORT_PAGE = 1000;

/**
 * `masq subject export --user-id <id> --reason "…"`: every row of every registered table (or of the one --table or
 * MASQ_TABLE names) for this user, with ip and device_id decrypted beside their pseudonyms, and the user's quarantined
 * messages with their originals (GDPR Art. 15). Authorised and audited as `masq unmask` is
 * (lifecycle/export-subject.ts): the audit row, naming the user by its fingerprint, commits before anything is shown.
 * Exit 1 when a value is withheld because it is not its pseudonym's.
 */
export async function subjectExportCommand(flags: Record<string, unknown>): Promise<number> {
  const src = settingSources(flags, process.env);
  const reason = readReason(flags);
  const userId = typeof flags.userId === "string" ? flags.userId : "";
  // The id is never echoed: it is the subject's identifier.
  if (userId.trim() === "") throw new ConfigError("--user-id", "is required: the user whose data to export, as in the table's user_id column");
  const from = readDate("--from", flags.from);
  const to = readDate("--to", flags.to);
  if (from !== undefined && to !== undefined && from > to) throw new ConfigError("--from/--to", "--from is after --to: nothing would match");
  const format = readFormat(flags);
  const pageSize = readPageSize(flags.pageSize);
  const named = readNamedTable(src);
  const writer = new ExportWriter(format);
  let begun = false;
  const emit = async (lines: ExportLine[]) => {
    await write(begun ? writer.page(lines) : writer.begin() + writer.page(lines));
    begun = true;
  };
  const req = { userId, named, tableSetting: flags.table !== undefined ? "--table" : "MASQ_TABLE", from, to, pageSize, reason, pseudonymKeyOverride: readPseudonymKey(src) };
  return runAudited(flags, { keys: "now", refuse: REVEAL_REFUSAL }, async (lc) => {
    const forged = await exportUser(lc, req, emit, {
      // Said, not skipped silently: an access request's export is then incomplete.
      unreadable: (t) => process.stderr.write(`masq: ${t.schema}.${t.name} is a table masq writes that this login may not read: its rows are not in this export\n`),
      audited: (seq) => revealing("subject export", seq),
      exported: (table, r, withQuarantine, tables) => {
        const of = tables > 1 ? ` from ${table.schema}.${table.name}` : "";
        process.stderr.write(
          `masq: exported ${r.rows} row(s)${of} and ${r.quarantined} quarantined message(s) of this user in ${r.pages} page(s); audit row ${r.auditSeq}` +
            ` records ${r.recorded.rows} row(s), ${r.recorded.values} value(s), ${r.recorded.quarantined} quarantined\n`,
        );
        if (r.rows !== r.recorded.rows || (withQuarantine && r.quarantined !== r.recorded.quarantined)) {
          process.stderr.write("masq: rows of this user arrived or went while exporting: the export and its audit row differ; run it again once ingestion is drained\n");
        }
      },
    });
    await write((begun ? "" : writer.begin()) + writer.end());
    for (const f of forged) {
      process.stderr.write(`masq: the vault value of ${f.kind} ${f.pseudonym} is not that pseudonym's value (planted with ingestion's credentials?): not shown; marked suspect\n`);
    }
    return forged.length > 0 ? 1 : 0;
  });
}

function readDate(name: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(v) || Number.isNaN(Date.parse(`${v}T00:00:00Z`))) throw new ConfigError(name, "must be a date, YYYY-MM-DD");
  return v;
}

function readPageSize(v: unknown): number {
  if (v === undefined) return EXPORT_PAGE;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 100_000) throw new ConfigError("--page-size", "must be a whole number from 1 to 100000");
  return n;
}

/** Waits for stdout to drain when its buffer is full, so that a slow reader (a pipe, a terminal) bounds memory too. */
async function write(text: string): Promise<void> {
  if (text !== "" && !process.stdout.write(text)) await once(process.stdout, "drain");
}

/**
 * `masq subject erase --user-id <id> --reason "…" [--dry-run] [--vault-only]`: deletes a user's rows (of every
 * registered table, or of the one --table or MASQ_TABLE names) and quarantine records and every vault value only they
 * used (or, --vault-only, just those values and the encrypted originals of their quarantine records), in bounded
 * batches, audited before and after (lifecycle/erase-subject.ts). The trail and every output name the user by a keyed
 * fingerprint, never by the id. Needs masq_erase.
 */
export async function subjectEraseCommand(flags: Record<string, unknown>): Promise<number> {
  const src = settingSources(flags, process.env);
  const userId = readUserId(flags);
  const dryRun = flags.dryRun === true;
  const vaultOnly = flags.vaultOnly === true;
  // A dry run is recorded too (its counts say whether the user exists); it needs no justification of its own.
  const reason = dryRun && flags.reason === undefined ? "dry run (counts only)" : readReason(flags);
  const named = readNamedTable(src);
  const where = (t: TableName) => `${t.schema}.${t.name}${vaultOnly ? ", vault only" : ""}`;
  let bar: Progress | undefined;
  return runAudited(flags, { keys: "now", poolSize: 3, refuse: ERASE_REFUSAL }, async (lc) => {
    const total = await eraseUser(lc, { userId, named, vaultOnly, dryRun, reason }, {
      previewed: (table, before) =>
        process.stdout.write(
          summary(`masq subject erase --dry-run (${where(table)}): nothing was changed; an erasure now would delete`, before) + `  audit row                #${before.seq} (preview)\n`,
        ),
      erasing: () => {
        bar = createProgress("erasing", { unit: vaultOnly ? "values" : "rows" });
        return (b) => bar?.committed({ size: vaultOnly ? b.vault + b.originals : b.rows + b.quarantine, seconds: 0, written: 0, duplicates: 0, quarantinedByReason: {}, lagSeconds: [] });
      },
      erased: (table, r, fingerprint) => {
        bar?.stop({ complete: true });
        process.stdout.write(summary(`masq subject erase (${where(table)}): user ${fingerprint}`, r) + `  audit rows               #${r.startSeq} (start), #${r.doneSeq} (done)\n`);
      },
      blockerEnded: (b, what) => process.stderr.write(`masq: ${endedLine(b, what)}\n`),
    });
    if (dryRun) return 0;
    process.stdout.write(
      (total === 0 ? "Nothing of this user was left to erase (erased before, or never ingested).\n" : "") +
        "Messages for this user still queued, or arriving while this ran, are new data. Once the queue is drained\n" +
        "(masq status shows it empty), run the same command again: it deletes only what is new.\n",
    );
    return 0;
  });
}

function summary(head: string, c: ErasureCounts): string {
  return (
    `${head}\n` +
    `  rows                     ${c.rows}\n` +
    `  quarantine records       ${c.quarantine}\n` +
    (c.originals > 0 ? `  quarantined originals    ${c.originals}\n` : "") +
    `  vault values             ${c.vault}   (values other users' rows also use stay)\n`
  );
}

export function readUserId(flags: Record<string, unknown>): string {
  const v = flags.userId;
  const id = typeof v === "string" ? v : Array.isArray(v) && v.length === 1 ? String(v[0]) : undefined;
  // The id is never echoed: it is what is being erased.
  if (id === undefined || id === "") throw new ConfigError("--user-id", "is required: exactly one user id, as in the table's user_id", { what: "no user" });
  if (id.length > 128) throw new ConfigError("--user-id", `is ${id.length} characters long; user_id holds at most 128`, { what: "not a user id" });
  return id;
}
