import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { prepareDatabase } from "../../src/db/prepare-database.ts";
import { sendBodies } from "../../src/ops/demo.ts";
import { createLogger } from "../../src/log.ts";
import { createDb, type Db } from "../../src/db/pool.ts";
import { LEGACY_MIGRATIONS_DIR, loadMigrations } from "../../src/db/migrate.ts";
import { makeRunner, TABLE } from "../helpers/pipeline.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";
import { startTestSqs, type TestSqs } from "../helpers/sqs.ts";

/**
 * masq supports any server encoding for its own schema (the migrations are plain ASCII) and writes values as UTF-8:
 * in a database whose encoding cannot hold a character of a message, that message is quarantined, not an outage.
 */
describe("database encodings", () => {
  let pgdb: TestDatabase;
  let sqs: TestSqs;
  let db: Db;
  let admin: pg.Client;
  const name = `masq_latin1_${randomBytes(4).toString("hex")}`;

  before(async () => {
    [pgdb, sqs] = await Promise.all([createTestDatabase(), startTestSqs()]);
    admin = new pg.Client({ connectionString: pgdb.url });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`);
    const u = new URL(pgdb.url);
    u.pathname = `/${name}`;
    db = createDb({ databaseUrl: u.toString() });
  });
  after(async () => {
    await db.close();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
    await sqs.close();
    await pgdb.close();
  });

  test("every migration is plain ASCII", () => {
    const conversion = { name: "legacy/to_baseline", sql: readFileSync(new URL("../../migrations/legacy/to_baseline.sql", import.meta.url), "utf8") };
    for (const m of [...loadMigrations(), ...loadMigrations(LEGACY_MIGRATIONS_DIR), conversion]) {
      const at = [...m.sql].findIndex((ch) => ch.charCodeAt(0) > 0x7e || (ch.charCodeAt(0) < 0x20 && !"\n\r\t".includes(ch)));
      assert.equal(at, -1, `${m.name} has a non-ASCII character at offset ${at}: ${JSON.stringify(m.sql.slice(Math.max(0, at - 20), at + 20))}`);
    }
    assert.ok(readFileSync(new URL("../../deploy/sql/login-roles.sql", import.meta.url), "utf8").split("").every((ch) => ch.charCodeAt(0) < 0x7f));
  });

  test("a LATIN1 database migrates, and takes the messages it can represent; the one it cannot is quarantined", async () => {
    await prepareDatabase(db, TABLE, { migrate: true, logger: createLogger("silent") });
    assert.equal((await db.pool.query<{ server_encoding: string }>("SHOW server_encoding")).rows[0]!.server_encoding, "LATIN1");
    const event = (userId: string) => JSON.stringify({ user_id: userId, device_type: "ios", ip: "198.51.100.7", device_id: "123-45-6789", locale: "fr_FR", app_version: "2.1.0" });
    const queueUrl = sqs.newQueue();
    await sendBodies(sqs.client, queueUrl, [event("u-caf\u00e9"), event("u-arrow-\u2192"), event("u-plain")]);
    const r = await (await makeRunner({ db, sqs: sqs.client, queueUrl })).run({ drain: true });
    assert.equal(r.fatal, undefined);
    const rows = (await db.pool.query<{ user_id: string }>("SELECT user_id FROM public.user_logins ORDER BY user_id")).rows.map((x) => x.user_id);
    assert.deepEqual(rows, ["u-caf\u00e9", "u-plain"]);
    const q = (await db.pool.query<{ reason: string; detail: string }>("SELECT reason, detail FROM masq.quarantine")).rows;
    assert.equal(q.length, 1, JSON.stringify(q));
    assert.equal(q[0]!.reason, "db_rejected");
    assert.match(q[0]!.detail, /has no equivalent in encoding "LATIN1"/);
  });
});
