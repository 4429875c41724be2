import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { SCHEMA_TABLES } from "../../src/db/schema.ts";
import { createDb, type Db } from "../../src/db/pool.ts";
import { migrate } from "../../src/db/migrate.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";

let pgdb: TestDatabase;
let db: Db;

before(async () => {
  pgdb = await createTestDatabase();
  db = createDb({ databaseUrl: pgdb.url });
  await migrate(db.pool);
});
after(async () => {
  await db.close();
  await pgdb.close();
});

/** Every table of schema masq in a migrated database (a partitioned table once, not its partitions), as SCHEMA_TABLES spells it. */
async function migratedTables(): Promise<Record<string, Record<string, string>>> {
  const { rows } = await db.pool.query<{ t: string; col: string; type: string; nullable: boolean }>(
    `SELECT c.relname AS t, a.attname AS col, format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid
     WHERE n.nspname = 'masq' AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY c.relname, a.attnum`,
  );
  const out: Record<string, Record<string, string>> = {};
  for (const r of rows) (out[`masq.${r.t}`] ??= {})[r.col] = `${r.type}${r.nullable ? "?" : ""}`;
  return out;
}

test("src/db/schema.ts names every table and column of schema masq, with its type and nullability, as the migrations make them", async () => {
  const migrated = await migratedTables();
  const declared = JSON.parse(JSON.stringify(SCHEMA_TABLES)) as Record<string, Record<string, string>>;
  const missing = Object.keys(migrated).filter((t) => !(t in declared));
  const extra = Object.keys(declared).filter((t) => !(t in migrated));
  assert.deepEqual(missing, [], "add these tables to SCHEMA_TABLES in src/db/schema.ts");
  assert.deepEqual(extra, [], "these tables of SCHEMA_TABLES (src/db/schema.ts) are not in a migrated database");
  for (const [t, columns] of Object.entries(migrated)) {
    assert.deepEqual(declared[t], columns, `${t}: SCHEMA_TABLES in src/db/schema.ts says otherwise than the migrations`);
  }
});
