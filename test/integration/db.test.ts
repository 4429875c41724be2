import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import pg from "pg";
import { createDb, type Db } from "../../src/db/pool.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";

let pgdb: TestDatabase;
let db: Db;
before(async () => {
  pgdb = await createTestDatabase();
  db = createDb({ databaseUrl: pgdb.url });
});
after(async () => {
  await db.close();
  await pgdb.close();
});

test("a checked-out connection that the server drops fails its query instead of crashing masq", async () => {
  const client = await db.pool.connect();
  const { rows } = await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
  const admin = new pg.Client({ connectionString: pgdb.url });
  await admin.connect();
  try {
    // The server ends the connection while masq holds it between two statements (as in a multi-statement commit).
    await admin.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]);
    await new Promise((r) => setTimeout(r, 300));
    await assert.rejects(client.query("SELECT 1"));
    client.release(true);
    // The pool replaces the broken connection.
    const again = await db.pool.query<{ one: number }>("SELECT 1 AS one");
    assert.equal(again.rows[0]!.one, 1);
  } finally {
    await admin.end();
  }
});
