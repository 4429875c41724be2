import type pg from "pg";
import type { LoginRow } from "../mask/mask-event.ts";
import type { ReasonCode } from "../transform/login-event.ts";
import { classifyPgError } from "./pg-errors.ts";
import { qualified, type TableName } from "./table-name.ts";

/** A message ready to commit: a row for the user's table, or a quarantine record. Neither holds plain PII. */
export type Outcome = {
  messageId: string;
  /** SentTimestamp; null only when SQS did not report one. */
  sentAt: Date | null;
  receivedAt: Date;
  bodyLength: number;
} & ({ kind: "row"; row: LoginRow } | { kind: "quarantine"; reason: ReasonCode; detail: string; redactedBody: string | null });

export interface BatchResult {
  written: number;
  quarantined: number;
  /** Newly quarantined messages by reason code (redeliveries of already-quarantined messages not counted). */
  quarantinedByReason: Record<string, number>;
  /** Message ids already in the ledger: committed before (a redelivery), so nothing was written again. */
  duplicates: number;
}

/**
 * One statement, so one transaction and one round trip per batch: claims every message id in the ingest ledger
 * and writes rows and quarantine records only for the ids it newly claimed. A redelivered message finds its id
 * already claimed and adds nothing; two workers racing on the same id serialise on the ledger's primary key.
 */
function batchSql(table: TableName): string {
  return `
WITH rows AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::date[])
    AS r(message_id, user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
), bad AS (
  SELECT * FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::int[], $14::timestamptz[], $15::timestamptz[])
    AS q(message_id, reason, detail, body, body_length, sent_at, received_at)
), claimed AS (
  INSERT INTO masq.ingest_ledger (message_id, outcome)
  SELECT message_id, 'written' FROM rows
  UNION ALL
  SELECT message_id, 'quarantined' FROM bad
  ON CONFLICT (message_id) DO NOTHING
  RETURNING message_id, outcome
), written AS (
  INSERT INTO ${qualified(table)} (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
  SELECT r.user_id, r.device_type, r.masked_ip, r.masked_device_id, r.locale, r.app_version, r.create_date
  FROM rows r JOIN claimed c ON c.message_id = r.message_id AND c.outcome = 'written'
  RETURNING 1
), quarantined AS (
  INSERT INTO masq.quarantine (message_id, reason, detail, body, body_length, sent_at, received_at)
  SELECT b.message_id, b.reason, b.detail, b.body, b.body_length, b.sent_at, b.received_at
  FROM bad b JOIN claimed c ON c.message_id = b.message_id AND c.outcome = 'quarantined'
  RETURNING reason
)
SELECT (SELECT count(*) FROM written)::int AS written,
       (SELECT coalesce(json_object_agg(reason, n), '{}') FROM (SELECT reason, count(*)::int AS n FROM quarantined GROUP BY reason) g) AS by_reason`;
}

const sqlCache = new Map<string, string>();

/**
 * Commits a batch. Outcomes must have distinct message ids (the runner dedupes). Throws TransientError,
 * DataError (some row is unacceptable to this table: split and retry) or FatalError.
 */
export async function writeBatch(pool: pg.Pool, table: TableName, outcomes: readonly Outcome[]): Promise<BatchResult> {
  const key = qualified(table);
  let text = sqlCache.get(key);
  if (text === undefined) sqlCache.set(key, (text = batchSql(table)));

  const r = { id: [] as string[], user: [] as string[], type: [] as string[], ip: [] as string[], dev: [] as string[], loc: [] as (string | null)[], ver: [] as number[], date: [] as string[] };
  const q = { id: [] as string[], reason: [] as string[], detail: [] as string[], body: [] as (string | null)[], len: [] as number[], sent: [] as (string | null)[], recv: [] as string[] };
  for (const o of outcomes) {
    if (o.kind === "row") {
      r.id.push(o.messageId);
      r.user.push(o.row.userId);
      r.type.push(o.row.deviceType);
      r.ip.push(o.row.maskedIp);
      r.dev.push(o.row.maskedDeviceId);
      r.loc.push(o.row.locale);
      r.ver.push(o.row.appVersion);
      r.date.push(o.row.createDate);
    } else {
      q.id.push(o.messageId);
      q.reason.push(o.reason);
      q.detail.push(o.detail);
      q.body.push(o.redactedBody);
      q.len.push(o.bodyLength);
      q.sent.push(o.sentAt?.toISOString() ?? null);
      q.recv.push(o.receivedAt.toISOString());
    }
  }
  try {
    const res = await pool.query<{ written: number; by_reason: Record<string, number> }>({
      text,
      // A named statement is parsed and planned once per connection, not once per batch.
      name: `masq_write_batch_${key}`.slice(0, 63),
      values: [r.id, r.user, r.type, r.ip, r.dev, r.loc, r.ver, r.date, q.id, q.reason, q.detail, q.body, q.len, q.sent, q.recv],
    });
    const written = res.rows[0]?.written ?? 0;
    const quarantinedByReason = res.rows[0]?.by_reason ?? {};
    const quarantined = Object.values(quarantinedByReason).reduce((a, b) => a + b, 0);
    return { written, quarantined, quarantinedByReason, duplicates: outcomes.length - written - quarantined };
  } catch (err) {
    throw classifyPgError(err);
  }
}
