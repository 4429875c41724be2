import { sql } from "kysely";
import { masqQueries } from "../db/schema.ts";
import type { Db } from "../sink/db.ts";
import type { TableName } from "../sink/table-name.ts";

export interface DemoSummary {
  rows: number;
  quarantineByReason: { reason: string; count: number }[];
  topDevices: { pseudonym: string; count: number }[];
  topIps: { pseudonym: string; count: number }[];
  /** Distinct originals in the vault, by kind, and the data keys that encrypt them. */
  vault: { ip: number; deviceId: number; dataKeys: number };
}

/** What an analyst would look at first: counts, the quarantine by reason, and the largest duplicate groups. */
export async function summarize(db: Db, table: TableName, top = 5): Promise<DemoSummary> {
  const t = sql.table(`${table.schema}.${table.name}`);
  const rows = await sql<{ n: number }>`SELECT count(*)::int AS n FROM ${t}`.execute(masqQueries(db));
  const quarantine = await masqQueries(db)
    .selectFrom("masq.quarantine")
    .select(["reason", sql<number>`count(*)::int`.as("count")])
    .groupBy("reason")
    .orderBy("count", "desc")
    .execute();
  const group = (column: "masked_device_id" | "masked_ip") =>
    sql<{ pseudonym: string; count: number }>`
      SELECT ${sql.ref(column)} AS pseudonym, count(*)::int AS count FROM ${t}
      GROUP BY 1 HAVING count(*) > 1 ORDER BY 2 DESC, 1 LIMIT ${top}`.execute(masqQueries(db));
  const vault = await sql<{ ip: number; device_id: number; data_keys: number }>`
    SELECT count(*) FILTER (WHERE kind = 'ip')::int AS ip, count(*) FILTER (WHERE kind = 'device_id')::int AS device_id,
           (SELECT count(*) FROM masq.data_keys)::int AS data_keys
    FROM masq.vault`.execute(masqQueries(db));
  const v = vault.rows[0];
  return {
    vault: { ip: v?.ip ?? 0, deviceId: v?.device_id ?? 0, dataKeys: v?.data_keys ?? 0 },
    rows: rows.rows[0]?.n ?? 0,
    quarantineByReason: quarantine,
    topDevices: (await group("masked_device_id")).rows,
    topIps: (await group("masked_ip")).rows,
  };
}
