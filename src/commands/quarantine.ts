import { readFileSync } from "node:fs";
import { readDatabaseUrl, readPseudonymKey, readTable } from "../config.ts";
import { ConfigError, describeError } from "../errors.ts";
import type { LoginRow } from "../mask/mask-event.ts";
import { createPseudonymizer } from "../mask/pseudonymize.ts";
import { prepareOutcome } from "../runner/prepare.ts";
import { createDb, type Db } from "../sink/db.ts";
import { replayRows, type ReplayItem } from "../sink/replay.ts";

/** `masq quarantine list`: what is waiting, newest first. */
export async function quarantineList(flags: Record<string, unknown>): Promise<number> {
  return withDb(flags, async (db) => {
    let q = db.kysely
      .selectFrom("masq.quarantine")
      .select(["message_id", "reason", "detail", "body_length", "sent_at", "quarantined_at", "replayed_at"])
      .orderBy("quarantined_at", "desc")
      .limit(Number(flags.limit ?? 50));
    if (typeof flags.reason === "string") q = q.where("reason", "=", flags.reason);
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

/** `masq quarantine show <id>`: one record, with its redacted body. */
export async function quarantineShow(messageId: string, flags: Record<string, unknown>): Promise<number> {
  return withDb(flags, async (db) => {
    const r = await db.kysely.selectFrom("masq.quarantine").selectAll().where("message_id", "=", messageId).executeTakeFirst();
    if (r === undefined) {
      process.stderr.write(`masq: no quarantined message with id ${messageId}\n`);
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

function renderRecord(r: Record<string, unknown>): string {
  const lines = Object.entries(r)
    .filter(([k]) => k !== "body")
    .map(([k, v]) => `${k.padEnd(15)} ${v instanceof Date ? v.toISOString() : v === null || v === undefined ? "—" : JSON.stringify(v)}`);
  lines.push(`body (PII replaced by pseudonyms):`, r.body === null ? "  (not kept: the body was not JSON)" : JSON.stringify(r.body, null, 2));
  return `${lines.join("\n")}\n`;
}

/**
 * `masq quarantine replay`: loads quarantined messages after all.
 *  - db_rejected records hold the masked row itself: once the table accepts it (a constraint fixed), it is replayed.
 *  - any record can be replayed with a corrected body (--body-file, one --id): it goes through the same
 *    validate/mask path as ingestion, with the pseudonym key.
 * Other records cannot be replayed as they are: masq keeps only a redacted copy of a rejected body.
 */
export async function quarantineReplay(flags: Record<string, unknown>): Promise<number> {
  const ids = Array.isArray(flags.id) ? (flags.id as string[]) : [];
  const reason = typeof flags.reason === "string" ? flags.reason : undefined;
  const bodyFile = typeof flags.bodyFile === "string" ? flags.bodyFile : undefined;
  if (bodyFile !== undefined && ids.length !== 1) throw new ConfigError("--body-file", "goes with exactly one --id");
  if (bodyFile === undefined && ids.length === 0 && reason === undefined) throw new ConfigError("--id/--reason", "say which records to replay");
  const table = readTable(flags, process.env);
  const pseudonymizer = bodyFile === undefined ? undefined : createPseudonymizer(readPseudonymKey(process.env));
  let correctedBody: string | undefined;
  if (bodyFile !== undefined) {
    try {
      correctedBody = readFileSync(bodyFile, "utf8");
    } catch (err) {
      throw new ConfigError("--body-file", `cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`);
    }
  }
  return withDb(flags, async (db) => {
    let q = db.kysely.selectFrom("masq.quarantine").select(["message_id", "reason", "body", "sent_at", "received_at"]).where("replayed_at", "is", null);
    if (ids.length > 0) q = q.where("message_id", "in", ids);
    if (reason !== undefined) q = q.where("reason", "=", reason);
    const records = await q.execute();
    const items: ReplayItem[] = [];
    const cannot: string[] = [];
    for (const r of records) {
      if (correctedBody !== undefined && pseudonymizer !== undefined) {
        const o = prepareOutcome({ messageId: r.message_id, body: correctedBody, sentAt: r.sent_at, receivedAt: r.received_at }, pseudonymizer);
        if (o.kind !== "row") {
          process.stderr.write(`masq: the corrected body is still rejected: ${o.reason}: ${o.detail}\n`);
          return 1;
        }
        items.push({ messageId: r.message_id, row: o.row });
      } else if (r.reason === "db_rejected" && r.body !== null) {
        items.push({ messageId: r.message_id, row: JSON.parse(r.body) as LoginRow });
      } else {
        cannot.push(r.message_id);
      }
    }
    if (cannot.length > 0) {
      process.stderr.write(
        `masq: ${cannot.length} record(s) cannot be replayed as they are: masq keeps only a redacted copy of a rejected body. ` +
          `Replay one with a corrected body: masq quarantine replay --id <message_id> --body-file <file>\n`,
      );
    }
    if (flags.dryRun === true) {
      process.stdout.write(`would replay ${items.length} record(s)\n`);
      return 0;
    }
    const r = await replayRows(db.pool, table, items);
    process.stdout.write(`replayed ${r.replayed}, already replayed or gone ${r.skipped}, still refused ${r.refused.size}\n`);
    for (const [id, why] of r.refused) process.stdout.write(`  ${id}: ${why}\n`);
    return r.refused.size > 0 || (cannot.length > 0 && items.length === 0) ? 1 : 0;
  });
}

async function withDb(flags: Record<string, unknown>, fn: (db: Db) => Promise<number>): Promise<number> {
  const db = createDb({ databaseUrl: readDatabaseUrl(flags, process.env), poolSize: 2 });
  try {
    return await fn(db);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    process.stderr.write(`masq: ${describeError(err)}\n`);
    return 1;
  } finally {
    await db.close().catch(() => undefined);
  }
}
