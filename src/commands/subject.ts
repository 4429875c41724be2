import { once } from "node:events";
import { exportUser } from "../lifecycle/export-subject.ts";
import { readPseudonymKey, readTable } from "../settings/config.ts";
import { revealing } from "../closed-stdout.ts";
import { ConfigError } from "../errors.ts";
import { namesTable } from "../sink/registered-tables.ts";
import { ExportWriter, type ExportLine } from "../lifecycle/export-output.ts";
import { readReason, REVEAL_REFUSAL, runAudited } from "../lifecycle/audited-command.ts";
import { readFormat } from "../lifecycle/unmask-output.ts";

/** Rows read, decrypted and written at a time: memory stays bounded however many rows the user has. */
const EXPORT_PAGE = 1000;

/**
 * `masq subject export --user-id <id> --reason "…"`: every row of every registered table (or of the one --table or
 * MASQ_TABLE names) for this user, with ip and device_id
 * decrypted beside their pseudonyms, and the user's quarantined messages with their originals (GDPR Art. 15).
 * Authorised and audited as `masq unmask` is (lifecycle/export-subject.ts): the audit row, naming the user by its
 * fingerprint, commits before anything is shown. Exit 1 when a value is withheld because it is not its pseudonym's.
 */
export async function subjectExportCommand(flags: Record<string, unknown>): Promise<number> {
  const reason = readReason(flags);
  const userId = typeof flags.userId === "string" ? flags.userId : "";
  // The id is never echoed: it is the subject's identifier.
  if (userId.trim() === "") throw new ConfigError("--user-id", "is required: the user whose data to export, as in the table's user_id column");
  const from = readDate("--from", flags.from);
  const to = readDate("--to", flags.to);
  if (from !== undefined && to !== undefined && from > to) throw new ConfigError("--from/--to", "--from is after --to: nothing would match");
  const format = readFormat(flags);
  const pageSize = readPageSize(flags.pageSize);
  const named = namesTable(flags, process.env) ? readTable(flags, process.env) : undefined;
  const writer = new ExportWriter(format);
  let begun = false;
  const emit = async (lines: ExportLine[]) => {
    await write(begun ? writer.page(lines) : writer.begin() + writer.page(lines));
    begun = true;
  };
  const req = { userId, named, tableSetting: flags.table !== undefined ? "--table" : "MASQ_TABLE", from, to, pageSize, reason, pseudonymKeyOverride: readPseudonymKey(process.env) };
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
