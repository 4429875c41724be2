import { ERASE_REFUSAL, readReason, runAudited } from "../lifecycle/audited-command.ts";
import { eraseUser, type ErasureCounts } from "../lifecycle/erase-subject.ts";
import { readTable } from "../settings/config.ts";
import { ConfigError } from "../errors.ts";
import { createProgress, type Progress } from "../progress/progress.ts";
import { endedLine } from "../sink/lock-watch.ts";
import { namesTable } from "../sink/registered-tables.ts";
import type { TableName } from "../sink/table-name.ts";

/**
 * `masq subject erase --user-id <id> --reason "…" [--dry-run] [--vault-only]`: deletes a user's rows (of every
 * registered table, or of the one --table or MASQ_TABLE names) and quarantine records and every vault value only they used (or, --vault-only, just those values and the encrypted originals of
 * their quarantine records), in bounded batches, audited before and after (lifecycle/erase-subject.ts). The trail and
 * every output name the user by a keyed fingerprint, never by the id. Needs masq_erase.
 */
export async function subjectEraseCommand(flags: Record<string, unknown>): Promise<number> {
  const userId = readUserId(flags);
  const dryRun = flags.dryRun === true;
  const vaultOnly = flags.vaultOnly === true;
  // A dry run is recorded too (its counts say whether the user exists); it needs no justification of its own.
  const reason = dryRun && flags.reason === undefined ? "dry run (counts only)" : readReason(flags);
  const named = namesTable(flags, process.env) ? readTable(flags, process.env) : undefined;
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
