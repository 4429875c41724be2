import { readKeyConfig, readPseudonymKey, readTable, settingSources } from "../settings/config.ts";
import { ConfigError } from "../errors.ts";
import { runAudited } from "../lifecycle/audited-command.ts";
import { rewrapKeys, rotateMasterKey, type RewrapResult } from "../lifecycle/rotate-master-key.ts";
import { previewPseudonymRotation, rotatePseudonymKey } from "../lifecycle/rotate-pseudonym-key.ts";
import type { RotationPhase } from "../lifecycle/rotation-state.ts";
import { createProgress, type Progress } from "../ops/progress.ts";
import type { Db } from "../db/pool.ts";
import { endedLine } from "../db/lock-watch.ts";
import { qualified, type TableName } from "../db/tables.ts";

const n = (v: number) => v.toLocaleString("en-US");

/** Both rotations: batches of the table pass can wait on row locks (more room than ingestion's 60 s); a signal stops after the batch. */
const ROTATION = { keys: "now", poolSize: 3, statementTimeoutMs: 600_000, onStop: "stopping after the current batch (signal again to exit at once; --resume continues)" } as const;

/**
 * `masq rotate master-key [--dry-run]`: re-wraps every key under the configured master key
 * (docs/operations.md, "Rotating keys"). Exit 0 when nothing is left under another master key.
 */
export async function rotateMasterKeyCommand(flags: Record<string, unknown>): Promise<number> {
  const batchSize = typeof flags.batchSize === "number" ? flags.batchSize : 100;
  return runAudited(flags, ROTATION, async ({ db, keys, signal }) => {
    const provider = keys();
    if (flags.dryRun === true) {
      const would = await rewrapKeys(db.pool, provider, { batchSize, dryRun: true });
      const total = would.dataKeys + would.pseudonymKeys + would.auditKeys;
      if (total === 0) process.stdout.write(`every key is under ${would.masterKeyId} already: nothing to re-wrap\n`);
      else process.stdout.write(`would re-wrap ${counts(would)} under ${would.masterKeyId}, from ${fromText(would)}\n`);
      const skipped = would.unopenable.unused;
      if (skipped.length > 0) process.stdout.write(`would leave alone: ${n(skipped.length)} data key(s) that no configured master key opens and no value uses (${skipped.join(", ")})\n`);
      return 0;
    }
    const { done, left } = await rotateMasterKey(db.pool, provider, batchSize, signal);
    process.stdout.write(
      done.dataKeys + done.pseudonymKeys + done.auditKeys === 0
        ? `nothing re-wrapped: every key was under ${done.masterKeyId} already\n`
        : `re-wrapped ${counts(done)} under ${done.masterKeyId}, from ${fromText(done)}; no vault ciphertext changed\n`,
    );
    const skipped = done.unopenable.unused;
    if (skipped.length > 0) {
      process.stdout.write(
        `left alone: ${n(skipped.length)} data key(s) that no configured master key opens and no value uses (${skipped.join(", ")}); ` +
          "masq did not make them (SECURITY.md, \"Ingest credentials\")\n",
      );
    }
    if (left.dataKeys + left.pseudonymKeys + left.auditKeys - skipped.length > 0) {
      process.stdout.write(`still under another master key: ${counts(left)} (${fromText(left)}); run masq rotate master-key again\n`);
      return 1;
    }
    process.stdout.write(`every key is under ${done.masterKeyId} now: the old master key can be dropped once every masq process runs with the new one\n`);
    return 0;
  });
}

/**
 * `masq rotate pseudonym-key [--batch-size N] [--resume] [--dry-run]`: a new pseudonym key, and every pseudonym
 * under the old one replaced, while ingestion runs. The first SIGINT/SIGTERM stops after the current batch (exit 1,
 * resume later); every batch is its own transaction, so even a kill leaves a state that --resume continues.
 */
export async function rotatePseudonymKeyCommand(flags: Record<string, unknown>): Promise<number> {
  const src = settingSources(flags, process.env);
  if (readPseudonymKey(src) !== undefined) {
    throw new ConfigError("MASQ_PSEUDONYM_KEY", "is set: masq can rotate only the pseudonym key it manages and keeps wrapped in the database; unset it");
  }
  const table = readTable(src);
  const batchSize = typeof flags.batchSize === "number" ? flags.batchSize : 1000;
  return runAudited(flags, ROTATION, async ({ db, keys, signal }) => {
    const provider = keys();
    if (flags.dryRun === true) return dryRun(db, table);
    const report = reporter();
    const result = await rotatePseudonymKey({
      pool: db.pool,
      provider,
      table,
      batchSize,
      resume: flags.resume === true,
      limits: readKeyConfig(src).limits,
      signal,
      onSwitched: (s, switched) =>
        process.stdout.write(
          switched
            ? `switched from pseudonym key version ${s.fromVersion} to ${s.toVersion}: ingestion writes under version ${s.toVersion} from now on\n`
            : `resuming the rotation from version ${s.fromVersion} to ${s.toVersion} (${s.phase} pass)\n`,
        ),
      onBlockerEnded: (b, what) => process.stderr.write(`masq: ${endedLine(b, what)}\n`),
      onPhase: (phase) => phase !== "table" && report.phase(phase),
      onTable: (t) => report.phase("table", t),
      onBatch: (_phase, done, total) => report.batch(done, total),
    });
    report.stop();
    if (result.outcome === "nothing to resume") {
      process.stdout.write("no pseudonym key rotation is in progress: nothing to resume\n");
      return 0;
    }
    const s = result.state;
    if (result.outcome === "stopped") {
      process.stdout.write(
        `stopped in the ${s.phase} pass${s.phase === "table" ? ` (on ${s.targetTable}; done: ${s.tablesDone.length === 0 ? "none yet" : s.tablesDone.join(", ")})` : ""}; ` +
          `ingestion keeps writing under version ${s.toVersion}. ` +
          "Continue with: masq rotate pseudonym-key --resume\n",
      );
      return 1;
    }
    process.stdout.write(
      `finished: pseudonym key version ${s.fromVersion} retired and its key material destroyed; re-pseudonymised ` +
        `${n(s.vaultDone)} vault value(s), ${n(s.quarantineDone)} quarantined body(ies) and ${n(s.tableRowsDone)} row(s) of ${s.tablesDone.join(", ")}\n`,
    );
    if (s.forged > 0) {
      process.stdout.write(
        `  ${n(s.forged)} vault value(s) were not their pseudonym's value (planted with ingestion's credentials, or altered) and were dropped; ` +
          "their rows keep a pseudonym of their own\n",
      );
    }
    if (s.unmapped > 0) process.stdout.write(`  ${n(s.unmapped)} pseudonym(s) in kept bodies had no vault entry and were replaced by "retired-v${s.fromVersion}"\n`);
    const vacuum = s.tablesDone.map((t) => qualified({ schema: t.slice(0, t.indexOf(".")), name: t.slice(t.indexOf(".") + 1) }));
    process.stdout.write(`  old row versions keep old pseudonyms until vacuumed: VACUUM ${[...vacuum, "masq.vault", "masq.quarantine"].join(", ")}\n`);
    return 0;
  });
}

async function dryRun(db: Db, table: TableName): Promise<number> {
  const r = await previewPseudonymRotation(db, table);
  if (r.retiring !== null) process.stdout.write(`a rotation from version ${r.retiring} to ${r.version} is in progress: masq rotate pseudonym-key --resume continues it\n`);
  else if (r.version === null) process.stdout.write("there is no pseudonym key yet (the first masq run creates it): nothing to rotate\n");
  else if (r.provider === "external") process.stdout.write(`the active pseudonym key (version ${r.version}) is given in MASQ_PSEUDONYM_KEY: masq cannot rotate it\n`);
  else {
    const tables = r.tables.map((t) => `${t.text} (${n(t.blocks)} blocks)`);
    process.stdout.write(
      `would rotate pseudonym key version ${r.version} to ${r.version + 1}: ${n(r.values)} vault value(s), up to ${n(r.bodies)} quarantined body(ies), ` +
        `${tables.join(", ")}\n`,
    );
  }
  return 0;
}

/** A progress bar per pass on a terminal; elsewhere a plain line when a pass starts, every 10 s, and when it ends. */
function reporter(): { phase(p: RotationPhase, table?: string): void; batch(done: number, total: number): void; stop(): void } {
  const units: Record<RotationPhase, string> = { vault: "values", quarantine: "bodies", table: "blocks" };
  let phase: RotationPhase | undefined;
  let label = "";
  let bar: Progress | undefined;
  let shown = 0;
  let last = { done: 0, total: 0 };
  let lastLine = 0;
  const line = () => process.stdout.write(`${label}: ${n(last.done)}/${n(last.total)} ${units[phase!]}\n`);
  const stop = () => {
    if (phase === undefined) return;
    if (bar) bar.stop();
    else line();
    bar = undefined;
  };
  return {
    phase(p, table) {
      stop();
      phase = p;
      label = table === undefined ? `${p} pass` : `${p} pass (${table})`;
      shown = 0;
      last = { done: 0, total: 0 };
      lastLine = 0;
      bar = createProgress(label, { unit: units[p] });
    },
    batch(done, total) {
      last = { done, total };
      if (bar) {
        bar.setBacklog(total - done);
        bar.committed({ size: done - shown, seconds: 0, written: 0, duplicates: 0, quarantinedByReason: {}, lagSeconds: [] });
        shown = done;
      } else if (Date.now() - lastLine >= 10_000) {
        lastLine = Date.now();
        line();
      }
    },
    stop() {
      stop();
      phase = undefined;
    },
  };
}

function counts(r: Pick<RewrapResult, "dataKeys" | "pseudonymKeys" | "auditKeys">): string {
  return `${n(r.dataKeys)} data key(s) and ${n(r.pseudonymKeys)} pseudonym key(s)${r.auditKeys > 0 ? ` (and the audit key)` : ""}`;
}

function fromText(r: Pick<RewrapResult, "from">): string {
  return Object.entries(r.from)
    .map(([id, k]) => `${id} (${n(k)})`)
    .join(", ");
}
