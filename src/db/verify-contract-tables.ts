/**
 * The tables a contract writes, as `masq run` finds them at start: it never creates or alters them (`masq migrate
 * --contract` does), it only checks that each exists with its contract's columns, of types that take the values the
 * batch statement sends (contract-plan.ts sentTypeOf). On pg, not kysely: run imports this at start.
 */
import type pg from "pg";
import { FatalError } from "../errors.ts";
import type { ContractPlan, SentType } from "../ingest/contract-plan.ts";

/** The column types (information_schema data_type) that take a value sent as each type, by INSERT's assignment casts. */
const TAKES: Readonly<Record<SentType, readonly string[]>> = {
  text: ["text", "character varying"],
  bigint: ["bigint", "integer", "smallint", "numeric"],
  integer: ["integer", "bigint"],
  boolean: ["boolean"],
  timestamptz: ["timestamp with time zone"],
  date: ["date"],
};

/**
 * Throws a FatalError (one line naming the table, the column and `masq migrate --contract`) for the first contract
 * table that is missing, lacks a column, or has one of a type that does not take its values. Reads only.
 */
export async function verifyContractTables(pool: pg.Pool, plan: ContractPlan): Promise<void> {
  const { rows } = await pool.query<{ i: number; column_name: string | null; data_type: string | null }>(
    `SELECT t.i, c.column_name, c.data_type
     FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(schema_name, table_name, i)
     LEFT JOIN information_schema.columns c ON c.table_schema = t.schema_name AND c.table_name = t.table_name`,
    [plan.tables.map((t) => t.table.schema), plan.tables.map((t) => t.table.name)],
  );
  const fix = `run masq migrate --contract ${plan.file}`;
  plan.tables.forEach((t, i) => {
    const name = `${t.table.schema}.${t.table.name}`;
    const have = new Map(rows.filter((r) => Number(r.i) === i + 1 && r.column_name !== null).map((r) => [r.column_name!, r.data_type!]));
    if (have.size === 0) throw new FatalError(`table ${name} (event type ${t.events.join(", ")}) does not exist: ${fix}`);
    for (const c of t.columns) {
      const type = have.get(c.name);
      if (type === undefined) throw new FatalError(`table ${name} has no column ${c.name} (field ${c.path}): ${fix}`);
      if (!TAKES[c.sent].includes(type)) throw new FatalError(`column ${name}.${c.name} is ${type}, field ${c.path} needs ${TAKES[c.sent].join(" or ")}: ${fix}`);
    }
  });
}
