/**
 * The user's table as masq knows it: its name as a setting gives it (quoted wherever it goes into SQL), its layout
 * (created when absent, never altered, checked before any write). The tables the owner registered for the lifecycle
 * commands: registered-tables.ts.
 */
import type pg from "pg";
// Statements on pg, not kysely: `masq run` imports this file at start (ensure and verify the target table) and
// must not load kysely there (about 0.2 s; test/unit/start-up-imports.test.ts). registeredTables, which only the
// lifecycle commands call, is in registered-tables.ts, through kysely.
import { FatalError } from "../errors.ts";

/** A schema-qualified table name, quoted safely wherever it is put into SQL. */
export interface TableName {
  schema: string;
  name: string;
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;

/** "user_logins" or "analytics.user_logins". Only plain identifiers: no quoting games in a setting. */
export function parseTableName(text: string): TableName {
  const parts = text.trim().split(".");
  if (parts.length > 2 || parts.some((p) => !IDENT.test(p))) {
    throw new Error(`must be a table name or schema.table made of letters, digits and _ (got "${text}")`);
  }
  return parts.length === 2 ? { schema: parts[0]!, name: parts[1]! } : { schema: "public", name: parts[0]! };
}

export function quoteIdent(id: string): string {
  return `"${id.replace(/"/g, '""')}"`;
}

export function qualified(t: TableName): string {
  return `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`;
}

/** The user's table, exactly as given. masq creates it only when it does not exist, and never alters it. */
export function targetTableDdl(t: TableName): string {
  return `CREATE TABLE IF NOT EXISTS ${qualified(t)}(
    user_id             varchar(128),
    device_type         varchar(32),
    masked_ip           varchar(256),
    masked_device_id    varchar(256),
    locale              varchar(32),
    app_version         integer,
    create_date         date
)`;
}

const EXPECTED: Record<string, string[]> = {
  user_id: ["character varying", "text"],
  device_type: ["character varying", "text"],
  masked_ip: ["character varying", "text"],
  masked_device_id: ["character varying", "text"],
  locale: ["character varying", "text"],
  app_version: ["integer", "bigint"],
  create_date: ["date"],
};

/**
 * Creates the target table if it is absent, then checks that the table masq will write has the columns it needs.
 * The existence check comes first so that a role without CREATE on the schema can still write an existing table.
 */
export async function ensureTargetTable(pool: pg.Pool, t: TableName): Promise<{ created: boolean }> {
  const exists = await pool.query<{ oid: string | null }>("SELECT to_regclass($1) AS oid", [qualified(t)]);
  const created = exists.rows[0]?.oid == null ? await createTargetTable(pool, t) : false;
  await verifyTargetTable(pool, t);
  return { created };
}

/** Throws a FatalError naming the first column the table lacks or has with another type. Reads only. */
export async function verifyTargetTable(pool: pg.Pool, t: TableName): Promise<void> {
  const { rows } = await pool.query<{ column_name: string; data_type: string }>(
    "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
    [t.schema, t.name],
  );
  const have = new Map(rows.map((r) => [r.column_name, r.data_type]));
  for (const [column, types] of Object.entries(EXPECTED)) {
    const type = have.get(column);
    if (type === undefined) throw new FatalError(`table ${t.schema}.${t.name} has no column ${column}; masq writes the user_logins layout`);
    if (!types.includes(type)) throw new FatalError(`column ${t.schema}.${t.name}.${column} is ${type}; masq needs ${types.join(" or ")}`);
  }
}

/**
 * Several masq processes (replicas, Lambda cold starts) may start at once against a fresh database. Concurrent
 * CREATE TABLE IF NOT EXISTS statements can still collide in the catalog (23505 on pg_type), so creation is
 * serialised under an advisory lock, and the existence check repeated once the lock is held. The lock is
 * session-level on purpose: the re-check must run in a transaction that starts after the wait, or it may not see
 * the table another process created meanwhile.
 */
async function createTargetTable(pool: pg.Pool, t: TableName): Promise<boolean> {
  const client = await pool.connect();
  try {
    await client.query("SELECT pg_advisory_lock(hashtext('masq.target_table'))");
    try {
      const again = await client.query<{ oid: string | null }>("SELECT to_regclass($1) AS oid", [qualified(t)]);
      if (again.rows[0]?.oid != null) return false;
      const schema = await client.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [t.schema]);
      if (schema.rowCount === 0) throw new FatalError(`schema "${t.schema}" of MASQ_TABLE does not exist; create it or choose another table`);
      await client.query(targetTableDdl(t));
      return true;
    } finally {
      await client.query("SELECT pg_advisory_unlock(hashtext('masq.target_table'))");
    }
  } finally {
    client.release();
  }
}
