import { sql } from "kysely";
import type { Db } from "../sink/db.ts";
import type { TableName } from "../sink/table-name.ts";

export interface DemoSummary {
  rows: number;
  quarantineByReason: { reason: string; count: number }[];
  topDevices: { pseudonym: string; count: number }[];
  topIps: { pseudonym: string; count: number }[];
}

/** What an analyst would look at first: counts, the quarantine by reason, and the largest duplicate groups. */
export async function summarize(db: Db, table: TableName, top = 5): Promise<DemoSummary> {
  const t = sql.table(`${table.schema}.${table.name}`);
  const rows = await sql<{ n: number }>`SELECT count(*)::int AS n FROM ${t}`.execute(db.kysely);
  const quarantine = await db.kysely
    .selectFrom("masq.quarantine")
    .select(["reason", sql<number>`count(*)::int`.as("count")])
    .groupBy("reason")
    .orderBy("count", "desc")
    .execute();
  const group = (column: "masked_device_id" | "masked_ip") =>
    sql<{ pseudonym: string; count: number }>`
      SELECT ${sql.ref(column)} AS pseudonym, count(*)::int AS count FROM ${t}
      GROUP BY 1 HAVING count(*) > 1 ORDER BY 2 DESC, 1 LIMIT ${top}`.execute(db.kysely);
  return {
    rows: rows.rows[0]?.n ?? 0,
    quarantineByReason: quarantine,
    topDevices: (await group("masked_device_id")).rows,
    topIps: (await group("masked_ip")).rows,
  };
}
