/**
 * The tables a contract writes, as `masq run` finds them at start: it never creates, alters or registers them (`masq
 * migrate --contract` does), it only checks that each exists with its contract's columns, of types that take the
 * values the batch statement sends (contract-plan.ts sentTypeOf), and is registered as the contract writes it
 * (registration-mismatch.ts), so that the lifecycle commands see every row and vault value run writes. One query for
 * every table. On pg, not kysely: run imports this at start.
 */
import type pg from "pg";
import { FatalError } from "../errors.ts";
import type { ContractPlan, SentType } from "../ingest/contract-plan.ts";
import { registrationMismatch, type Registration } from "./registration-mismatch.ts";

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
 * Throws a FatalError (one line naming the table, what differs and `masq migrate --contract`) for the first contract
 * table that is missing, lacks a column, has one of a type that does not take its values, or is not registered as the
 * contract writes it. Reads only (the ingest role reads the registry: 106_contract_tables.sql).
 */
export async function verifyContractTables(pool: pg.Pool, plan: ContractPlan): Promise<void> {
  // The registration repeats on each column's row: a few rows more, one round trip for every table.
  const { rows } = await pool.query<{ i: number; column_name: string | null; data_type: string | null; registration: Registration | null }>(
    `SELECT t.i, c.column_name, c.data_type, r.registration
     FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(schema_name, table_name, i)
     LEFT JOIN information_schema.columns c ON c.table_schema = t.schema_name AND c.table_name = t.table_name
     LEFT JOIN LATERAL (
       SELECT json_build_object('subjectColumn', r.subject_column,
                                'pseudonyms', coalesce((SELECT json_agg(json_build_object('column', p.column_name, 'kind', p.kind, 'recoverable', p.recoverable))
                                                        FROM masq.target_pseudonym_columns p WHERE p.relation = r.relation), '[]')) AS registration
       FROM masq.target_tables r WHERE r.relation = to_regclass(format('%I.%I', t.schema_name, t.table_name))
     ) r ON true`,
    [plan.tables.map((t) => t.table.schema), plan.tables.map((t) => t.table.name)],
  );
  const fix = `run masq migrate --contract ${plan.file}`;
  plan.tables.forEach((t, i) => {
    const name = `${t.table.schema}.${t.table.name}`;
    const mine = rows.filter((r) => Number(r.i) === i + 1);
    const have = new Map(mine.filter((r) => r.column_name !== null).map((r) => [r.column_name!, r.data_type!]));
    if (have.size === 0) throw new FatalError(`table ${name} (event type ${t.events.join(", ")}) does not exist: ${fix}`);
    for (const c of t.columns) {
      const type = have.get(c.name);
      if (type === undefined) throw new FatalError(`table ${name} has no column ${c.name} (field ${c.path}): ${fix}`);
      if (!TAKES[c.sent].includes(type)) throw new FatalError(`column ${name}.${c.name} is ${type}, field ${c.path} needs ${TAKES[c.sent].join(" or ")}: ${fix}`);
    }
    const differs = registrationMismatch(t, mine[0]?.registration ?? undefined);
    if (differs !== undefined) throw new FatalError(`table ${name} ${differs}: ${fix} as the schema owner`);
  });
}
