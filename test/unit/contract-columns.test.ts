import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { readContract } from "../../src/contracts/read-contract.ts";
import type { Contract, FieldSpec } from "../../src/contracts/contract.ts";
import fc from "fast-check";
import { columnFits, columnNeed, indexName, planTable, tableNeeds, type TableNeed, type TableState } from "../../src/contracts/contract-columns.ts";

const field = (over: Partial<FieldSpec>): FieldSpec => ({ path: "f", type: "string", required: true, maxLength: undefined, treatment: { name: "keep" }, column: "c", ...over });
const contractOf = (file: string): Contract => readContract(readFileSync(new URL(`../../contracts/${file}`, import.meta.url), "utf8")).contract!;

describe("columnNeed: the SQL type of each field's column (docs/contracts.md#tables)", () => {
  const cases: [string, Partial<FieldSpec>, string | undefined][] = [
    ["string keep", { type: "string", maxLength: 128 }, "varchar(128)"],
    ["string keep without max_length ($sns.MessageId)", { type: "string" }, "text"],
    ["string pseudonymize", { type: "string", maxLength: 320, treatment: { name: "pseudonymize", kind: "email" } }, "text"],
    ["string hash", { type: "string", maxLength: 4, treatment: { name: "hash", kind: "card" } }, "text"],
    ["integer pseudonymize", { type: "integer", treatment: { name: "pseudonymize", kind: "n" } }, "text"],
    ["integer keep", { type: "integer" }, "bigint"],
    ["integer generalize", { type: "integer", treatment: { name: "generalize", bucket: 10 } }, "bigint"],
    ["boolean keep", { type: "boolean" }, "boolean"],
    ["timestamp keep", { type: "timestamp" }, "timestamptz"],
    ["timestamp to hour", { type: "timestamp", treatment: { name: "generalize", to: "hour" } }, "timestamptz"],
    ["timestamp to day", { type: "timestamp", treatment: { name: "generalize", to: "day" } }, "date"],
    ["ip keep", { type: "ip", maxLength: 64 }, "text"],
    ["ip generalize", { type: "ip", treatment: { name: "generalize", ipv4Prefix: 24, ipv6Prefix: 48 } }, "text"],
    ["ip pseudonymize", { type: "ip", treatment: { name: "pseudonymize", kind: "ip" } }, "text"],
    ["semver", { type: "semver" }, "integer"],
    ["drop", { type: "string", treatment: { name: "drop" }, column: undefined }, undefined],
    ["object drop", { type: "object", treatment: { name: "drop" }, column: undefined }, undefined],
  ];
  for (const [name, over, sql] of cases) test(name, () => assert.equal(columnNeed(field(over))?.sql, sql));
});

describe("columnFits: whether an existing column holds every value of the field", () => {
  const need = (over: Partial<FieldSpec>) => columnNeed(field(over))!;
  const cases: [string, Partial<FieldSpec>, string, number | null, boolean][] = [
    ["varchar(128) in varchar(128)", { maxLength: 128 }, "character varying", 128, true],
    ["varchar(128) in varchar(256)", { maxLength: 128 }, "character varying", 256, true],
    ["varchar(128) in varchar(64)", { maxLength: 128 }, "character varying", 64, false],
    ["varchar(128) in text", { maxLength: 128 }, "text", null, true],
    ["varchar(128) in integer", { maxLength: 128 }, "integer", null, false],
    ["unbounded text in varchar(255)", {}, "character varying", 255, false],
    ["unbounded text in varchar", {}, "character varying", null, true],
    ["a pseudonym in varchar(256) (the login table's masked_ip)", { treatment: { name: "pseudonymize", kind: "ip" } }, "character varying", 256, true],
    ["a pseudonym in varchar(32)", { treatment: { name: "hash", kind: "k" } }, "character varying", 32, false],
    ["bigint in integer", { type: "integer" }, "integer", null, false],
    ["bigint in numeric", { type: "integer" }, "numeric", null, true],
    ["semver in integer", { type: "semver" }, "integer", null, true],
    ["day in timestamptz", { type: "timestamp", treatment: { name: "generalize", to: "day" } }, "timestamp with time zone", null, false],
    ["timestamptz in timestamp without time zone", { type: "timestamp" }, "timestamp without time zone", null, false],
  ];
  for (const [name, over, dataType, maxLength, fits] of cases) test(name, () => assert.equal(columnFits(need(over), { column: "c", dataType, maxLength }), fits));
});

describe("tableNeeds", () => {
  test("purchase.yaml: its table, subject column, columns in order and pseudonym columns by kind", () => {
    const r = tableNeeds(contractOf("examples/purchase.yaml"));
    assert.ok("tables" in r);
    const [t] = r.tables;
    assert.deepEqual(t!.table, { schema: "public", name: "purchases" });
    assert.equal(t!.subjectColumn, "customer_id");
    assert.deepEqual(
      t!.columns.map((c) => `${c.column} ${c.sql}`),
      ["event_type varchar(32)", "order_id varchar(64)", "customer_id varchar(128)", "masked_email text", "card_last4_hash text", "card_brand varchar(16)", "amount_cents bigint", "currency varchar(3)", "ordered_at timestamptz", "sns_message_id text", "create_date date"],
    );
    assert.deepEqual(t!.pseudonyms, [
      { column: "masked_email", kind: "email", recoverable: true },
      { column: "card_last4_hash", kind: "card_last4", recoverable: false },
    ]);
  });

  test("two event types in one table merge; a column they type differently is refused", () => {
    const base = contractOf("examples/page-view.yaml").events[0]!;
    const other = { ...base, name: "click", fields: [...base.fields.slice(0, 2), field({ path: "x", type: "boolean", column: "clicked" })] };
    const merged = tableNeeds({ version: 1, events: [base, other] });
    assert.ok("tables" in merged);
    assert.equal(merged.tables.length, 1);
    assert.deepEqual(merged.tables[0]!.events, ["page_view", "click"]);
    assert.ok(merged.tables[0]!.columns.some((c) => c.column === "clicked"));
    const clash = { ...base, name: "click", fields: [...base.fields.slice(0, 1), field({ path: "page", type: "integer", column: "page" })] };
    const refused = tableNeeds({ version: 1, events: [base, clash] });
    assert.ok("refusal" in refused);
    assert.match(refused.refusal, /^event types page_view and click both write public\.page_views: column page as varchar\(512\) and as bigint/);
  });
});

describe("planTable", () => {
  const need = (): TableNeed => {
    const r = tableNeeds(contractOf("examples/purchase.yaml"));
    assert.ok("tables" in r);
    return r.tables[0]!;
  };
  const created = (n: TableNeed): TableState => ({
    exists: true,
    columns: n.columns.map((c) => ({ column: c.column, dataType: c.sql.startsWith("varchar") ? "character varying" : c.sql === "timestamptz" ? "timestamp with time zone" : c.sql, maxLength: c.minLength ?? null })),
    registered: { subjectColumn: n.subjectColumn, pseudonyms: [...n.pseudonyms] },
    indexedKeys: ["customer_id", "masked_email"],
    takenNames: [],
  });

  test("an absent table: one CREATE TABLE with every column, every pseudonym column registered", () => {
    const n = need();
    const p = planTable(n, { exists: false, columns: [], registered: undefined, indexedKeys: [], takenNames: [] });
    assert.ok("ddl" in p);
    assert.equal(p.ddl.length, 1);
    // The subject (erasure, export) and the recoverable pseudonym column (values_in_use); not the hash column.
    assert.deepEqual(
      p.indexes.map((i) => [i.sql, i.purpose]),
      [
        [`CREATE INDEX IF NOT EXISTS "${indexName(n.table, "customer_id")}" ON "public"."purchases" ("customer_id")`, "subject"],
        [`CREATE INDEX IF NOT EXISTS "${indexName(n.table, "masked_email")}" ON "public"."purchases" ("masked_email")`, "pseudonyms of kind email"],
      ],
    );
    assert.match(p.ddl[0]!, /^CREATE TABLE "public"\."purchases"\(\n {4}"event_type" +varchar\(32\),\n/);
    assert.match(p.ddl[0]!, /"create_date" +date\n\)$/);
    assert.deepEqual(p.register, n.pseudonyms);
  });

  test("a table as the contract needs: nothing to do", () => {
    const n = need();
    assert.deepEqual(planTable(n, created(n)), { ddl: [], added: [], unused: [], register: [], indexes: [] });
  });

  test("indexes: what no index serves yet is made; an integer subject is indexed as the text the lookups compare", () => {
    const n = need();
    const state = created(n);
    state.indexedKeys = ["masked_email", "customer_id::text"];
    const p = planTable(n, state);
    assert.ok("ddl" in p);
    assert.deepEqual(p.indexes.map((i) => i.column), ["customer_id"], "a text subject needs the plain column, not its cast");
    const integer: TableNeed = { ...n, columns: n.columns.map((c) => (c.column === "customer_id" ? { ...c, sql: "bigint", fits: ["bigint", "numeric"], minLength: undefined } : c)) };
    const fresh = planTable(integer, { exists: false, columns: [], registered: undefined, indexedKeys: [], takenNames: [] });
    assert.ok("ddl" in fresh);
    assert.match(fresh.indexes[0]!.sql, /ON "public"\."purchases" \(\("customer_id"::text\)\)$/);
    const numeric = created(integer);
    numeric.columns.find((c) => c.column === "customer_id")!.dataType = "numeric";
    numeric.indexedKeys = ["customer_id", "masked_email"];
    const q = planTable(integer, numeric);
    assert.ok("ddl" in q);
    assert.deepEqual(q.indexes.map((i) => i.key), ["customer_id::text"]);
  });

  test("indexes: a name taken by another relation is refused (IF NOT EXISTS would skip it silently)", () => {
    const n = need();
    const state = created(n);
    state.indexedKeys = ["customer_id"];
    state.takenNames = [indexName(n.table, "masked_email")];
    assert.match((planTable(n, state) as { refusal: string }).refusal, /^index name public\.purchases_masked_email_[0-9a-f]{8}_idx, which masq gives the index on purchases\.masked_email \(pseudonyms of kind email\), is taken by another relation/);
  });

  test("indexName: stable, distinct where the readable parts meet, at most 63 bytes cut at a character", () => {
    const t = (name: string, schema = "public") => ({ schema, name });
    assert.match(indexName(t("purchases"), "customer_id"), /^purchases_customer_id_[0-9a-f]{8}_idx$/);
    assert.equal(indexName(t("purchases"), "customer_id"), indexName(t("purchases"), "customer_id"));
    assert.notEqual(indexName(t("a_b"), "c"), indexName(t("a"), "b_c"));
    assert.notEqual(indexName(t("p"), "c"), indexName(t("p", "shop"), "c"));
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", minLength: 1, maxLength: 63 }), fc.string({ unit: "grapheme", minLength: 1, maxLength: 63 }), (table, column) => {
        const name = indexName(t(table), column);
        assert.ok(Buffer.byteLength(name) <= 63, name);
        assert.ok(name.isWellFormed());
        assert.match(name, /_[0-9a-f]{8}_idx$/);
      }),
    );
  });

  test("a field added: ADD COLUMN, and its pseudonym column registered; a column the contract dropped is kept", () => {
    const n = need();
    const state = created(n);
    state.columns = state.columns.filter((c) => c.column !== "card_last4_hash").concat({ column: "legacy", dataType: "text", maxLength: null });
    state.registered!.pseudonyms = state.registered!.pseudonyms.filter((p) => p.column !== "card_last4_hash");
    const p = planTable(n, state);
    assert.ok("ddl" in p);
    assert.deepEqual(p.ddl, ['ALTER TABLE "public"."purchases" ADD COLUMN "card_last4_hash" text']);
    assert.deepEqual(p.unused, ["legacy"]);
    assert.deepEqual(p.register, [{ column: "card_last4_hash", kind: "card_last4", recoverable: false }]);
  });

  test("refusals: a retype, a kind or treatment change, another subject, clear values into a pseudonym column", () => {
    const n = need();
    const retyped = created(n);
    retyped.columns.find((c) => c.column === "amount_cents")!.dataType = "integer";
    assert.deepEqual(planTable(n, retyped), {
      refusal:
        "column public.purchases.amount_cents is integer; field amount_cents needs bigint or numeric: rename the column (or change it by hand) or give the field another column, then run masq migrate again",
    });
    const kind = created(n);
    kind.registered!.pseudonyms = [{ column: "masked_email", kind: "mail", recoverable: true }];
    assert.match((planTable(n, kind) as { refusal: string }).refusal, /^column public\.purchases\.masked_email holds pseudonyms of kind mail \(pseudonymize\), the contract makes it of kind email \(pseudonymize\)/);
    const treatment = created(n);
    treatment.registered!.pseudonyms = [{ column: "masked_email", kind: "email", recoverable: false }];
    assert.match((planTable(n, treatment) as { refusal: string }).refusal, /of kind email \(hash\), the contract makes it of kind email \(pseudonymize\)/);
    const subject = created(n);
    subject.registered!.subjectColumn = "order_id";
    assert.match((planTable(n, subject) as { refusal: string }).refusal, /^table public\.purchases is registered with subject column order_id, the contract's subject writes customer_id/);
    const clear = created(n);
    clear.registered!.pseudonyms = [];
    assert.match((planTable(n, clear) as { refusal: string }).refusal, /^column public\.purchases\.masked_email holds values in clear/);
    const toClear = created(n);
    toClear.registered!.pseudonyms.push({ column: "currency", kind: "currency", recoverable: true });
    assert.match((planTable(n, toClear) as { refusal: string }).refusal, /^column public\.purchases\.currency holds pseudonyms of kind currency \(pseudonymize\), the contract writes values in clear to it/);
  });
});
