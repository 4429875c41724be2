import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { readContract } from "../../src/contracts/read-contract.ts";
import { planContract } from "../../src/ingest/contract-plan.ts";
import { contractBatchSql } from "../../src/ingest/write-contract-batch.ts";

/** A contract planned for ingestion: each table's columns, the type each column's values are sent as, its statement. */
function contract(text: string) {
  const r = readContract(text);
  assert.deepEqual(r.errors, []);
  return r.contract!;
}

const purchase = contract(readFileSync(new URL("../../contracts/examples/purchase.yaml", import.meta.url), "utf8"));

test("each stored field is a column, sent as its type: HMACs and text as text, integers as bigint, a day as a date, instants as timestamptz", () => {
  const plan = planContract(purchase, "purchase.yaml");
  assert.equal(plan.tables.length, 1);
  assert.deepEqual(plan.tables[0]!.table, { schema: "public", name: "purchases" });
  assert.deepEqual(
    plan.tables[0]!.columns.map((c) => [c.name, c.sent, c.vaultKind ?? "-", c.hmacKind ?? "-"]),
    [
      ["event_type", "text", "-", "-"],
      ["order_id", "text", "-", "-"],
      ["customer_id", "text", "-", "-"],
      ["masked_email", "text", "email", "email"],
      ["card_last4_hash", "text", "-", "card_last4"],
      ["card_brand", "text", "-", "-"],
      ["amount_cents", "bigint", "-", "-"],
      ["currency", "text", "-", "-"],
      ["ordered_at", "timestamptz", "-", "-"],
      ["sns_message_id", "text", "-", "-"],
      ["create_date", "date", "-", "-"],
    ],
  );
  assert.equal(plan.events.get("purchase")!.subject?.path, "customer_id");
});

test("the statement quotes every table and column name, and adds to the vault only the pseudonymised columns' kinds", () => {
  const odd = contract(`version: 1
events:
  signup:
    match: all
    table: Odd_Schema.Sign_Ups
    subject: id
    unknown: quarantine
    fields:
      id: { type: integer, treatment: keep, column: id }
      email: { type: string, max_length: 64, treatment: pseudonymize, kind: email, column: masked_email }
      phone: { type: string, max_length: 32, treatment: hash, kind: phone, column: phone_hash }
`);
  const sql = contractBatchSql(planContract(odd, "odd.yaml"));
  assert.match(sql, /INSERT INTO "Odd_Schema"\."Sign_Ups" \("id", "masked_email", "phone_hash"\)/);
  assert.match(sql, /SELECT 'email'::text AS kind, r\.c1 AS p/);
  assert.doesNotMatch(sql, /'phone'::text/);
});

test("two event types writing one table write the union of their columns; a column both write must be written alike", () => {
  const twice = (second: string) =>
    contract(`version: 1
events:
  a:
    match: { field: type, equals: a }
    table: events
    subject: user_id
    unknown: drop
    fields:
      type: { type: string, max_length: 8, treatment: keep, column: type }
      user_id: { type: string, max_length: 8, treatment: keep, column: user_id }
  b:
    match: { field: type, equals: b }
    table: events
    subject: user_id
    unknown: drop
    fields:
${second}`);
  const plan = planContract(twice("      type: { type: string, max_length: 8, treatment: keep, column: type }\n      user_id: { type: string, max_length: 8, treatment: keep, column: user_id }\n      n: { type: integer, treatment: keep, column: n }\n"), "x.yaml");
  assert.equal(plan.tables.length, 1);
  assert.deepEqual(plan.tables[0]!.columns.map((c) => c.name), ["type", "user_id", "n"]);
  assert.deepEqual(plan.tables[0]!.events, ["a", "b"]);
  assert.throws(
    () => planContract(twice("      type: { type: string, max_length: 8, treatment: hash, kind: event_type, column: type }\n      user_id: { type: string, max_length: 8, treatment: keep, column: user_id }\n"), "x.yaml"),
    /event types a and b both write column type of table events, differently/,
  );
});
