import { readRetentionDays, readTable, settingSources } from "../settings/config.ts";
import { ConfigError } from "../errors.ts";
import { runAudited } from "../lifecycle/audited-command.ts";
import { pruneVault } from "../lifecycle/retention.ts";
import { endedLine } from "../db/lock-watch.ts";

const n = (v: number) => v.toLocaleString("en-US");

/**
 * `masq vault prune [--dry-run] [--batch-size N]`: applies MASQ_VAULT_RETENTION_DAYS once, to the end
 * (docs/operations.md, "Retention"). Needs masq_erase, and the master key (every deleting batch seals its audit row);
 * a dry run needs neither key. The first SIGINT/SIGTERM stops after the current batch (exit 1; run it again).
 */
export async function vaultPruneCommand(flags: Record<string, unknown>): Promise<number> {
  const src = settingSources(flags, process.env);
  const days = readRetentionDays(src);
  if (days === undefined) {
    throw new ConfigError("MASQ_VAULT_RETENTION_DAYS", "is not set; say how many days of data stay recoverable, e.g. MASQ_VAULT_RETENTION_DAYS=400", {
      what: "no retention period",
    });
  }
  const table = readTable(src);
  const dryRun = flags.dryRun === true;
  const batchSize = typeof flags.batchSize === "number" ? flags.batchSize : 1000;
  if (batchSize > 10_000) throw new ConfigError("--batch-size", `must be at most 10000 (got ${batchSize})`);
  const stop = "stopping after the current batch (signal again to exit at once; run masq vault prune again to continue)";
  // A dry run needs no key: the provider is made (and its settings read) only for a real prune.
  return runAudited(flags, { keys: dryRun ? "when-needed" : "now", poolSize: 3, onStop: stop }, async ({ db, keys, signal }) => {
    const r = await pruneVault({
      pool: db.pool,
      provider: dryRun ? undefined : keys(),
      table,
      days,
      dryRun,
      batchSize,
      signal,
      onBlockerEnded: (b, what) => process.stderr.write(`masq: ${endedLine(b, what)}\n`),
    });
    const what = `vault entry(ies) that no row of ${table.schema}.${table.name} from the last ${n(days)} days uses, and ${n(r.quarantinePruned)} quarantine record(s) older than that`;
    if (dryRun) {
      process.stdout.write(`would prune ${n(r.vaultPruned)} of ${n(r.scanned)} ${what}; nothing changed\n`);
      return 0;
    }
    process.stdout.write(`pruned ${n(r.vaultPruned)} of ${n(r.scanned)} ${what}; each batch is in the audit trail as vault-prune\n`);
    if (!r.complete) {
      process.stdout.write("stopped before the end: run masq vault prune again to continue\n");
      return 1;
    }
    return 0;
  });
}
