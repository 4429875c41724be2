import assert from "node:assert/strict";
import { test } from "node:test";
import { commitMessages } from "../../src/ingest/commit-batch.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { TABLE, testKeys } from "../helpers/pipeline.ts";

/**
 * A quarantine record names the user its redacted copy shows in clear (written by ingestion
 * from its parse), so that subject export and erasure find a user's refused messages; a record whose body names
 * nobody stays unattributed.
 */
const fx = usePipelineFixture();

test("quarantine.user_id is the top-level user_id the redacted copy keeps, and nothing else", async () => {
  await fx.reset();
  const keys = await testKeys(fx.db);
  const at = new Date("2026-11-30T10:00:00Z");
  const cases: [string, string | null][] = [
    ['{"user_id": "u-1", "device_type": "ios"}', "u-1"], // missing fields
    ['{"user_id": 42, "ip": "1.2.3.4"}', "42"], // a number is shown in clear, so it names the user
    ['{"user_id": "' + "x".repeat(129) + '"}', null], // longer than the table's column: not kept, names nobody
    ['{"user_id": {"id": "u-2"}}', null], // not a scalar
    ['{"nested": {"user_id": "u-3"}}', null], // not top level
    ["not json u-4", null],
    ['["u-5"]', null],
    ['{"user_id":"u-6","ip":"1.2.3.4"', "u-6"], // not JSON (cut off), but it names one user
    ['{"user_id":"u-7"} {"user_id":"u-8"}', null], // not JSON, and it names two: nobody
    ['{"user_id":"u-9","locale":"\\u0000"}', "u-9"], // a value jsonb cannot hold elsewhere (issue 17)
  ];
  const messages = cases.map(([body], i) => ({ messageId: `q-${i}`, body, sentAt: at, receivedAt: at }));
  const r = await commitMessages(fx.db.pool, TABLE, keys, messages);
  assert.equal(r.quarantined, cases.length);
  const rows = await fx.db.pool.query<{ message_id: string; user_id: string | null }>("SELECT message_id, user_id FROM masq.quarantine ORDER BY message_id");
  assert.deepEqual(
    rows.rows.map((x) => x.user_id),
    cases.map(([, expected]) => expected),
  );
  // The column is a fact ingestion writes from its parse; nothing in the database derives it from
  // the stored copy, so a copy written by hand names nobody.
  await fx.db.pool.query(
    `INSERT INTO masq.quarantine (message_id, reason, detail, body, body_length, received_at) VALUES
       ('r-1', 'db_rejected', 'd', '{"userId":"u-9","maskedIp":"ab","maskedDeviceId":"cd"}', 10, now())`,
  );
  const byHand = await fx.db.pool.query<{ user_id: string | null }>("SELECT user_id FROM masq.quarantine WHERE message_id = 'r-1'");
  assert.deepEqual(byHand.rows.map((x) => x.user_id), [null]);
});

test("the lifecycle functions act only on a registered, ordinary, persistent table", async () => {
  const check = (name: string) => fx.db.pool.query("SELECT masq.registered_target($1::text::regclass)", [name]);
  await check("public.user_logins"); // registered by prepareDatabase, as `masq migrate` does
  await fx.db.pool.query("CREATE TABLE public.other_logins (LIKE public.user_logins)");
  await assert.rejects(check("public.other_logins"), /not a table masq writes/);
  const client = await fx.db.pool.connect();
  try {
    // A temporary table or a view of a caller's own would run the caller's triggers or functions with the owner's rights.
    await client.query("CREATE TEMP TABLE user_logins (LIKE public.user_logins)");
    await assert.rejects(client.query("SELECT masq.registered_target('pg_temp.user_logins'::regclass)"), /not a table masq writes/);
    await client.query("CREATE VIEW pg_temp.v AS SELECT * FROM public.user_logins");
    await assert.rejects(client.query("SELECT masq.registered_target('pg_temp.v'::regclass)"), /not a table masq writes/);
  } finally {
    client.release(true);
  }
});

test("the lifecycle actions are allowed in the audit chain, and masq_erase exists", async () => {
  const c = await fx.db.pool.query<{ def: string }>("SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conname = 'audit_action_check'");
  for (const action of ["subject-export", "subject-erase", "vault-prune", "quarantine-original", "unmask"]) assert.match(c.rows[0]!.def, new RegExp(`'${action}'`));
  const role = await fx.db.pool.query("SELECT 1 FROM pg_roles WHERE rolname = 'masq_erase' AND NOT rolcanlogin");
  assert.equal(role.rowCount, 1);
});
