import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { REPO_ROOT, runDocCommands } from "../helpers/doc-blocks.ts";
import { MASQ_BIN } from "../helpers/masq-process.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";
import { runMasq } from "../helpers/run-masq.ts";
import { indexName } from "../../src/contracts/contract-columns.ts";

/**
 * `masq migrate --contract`, as the owner runs it (bin/masq, real Postgres): each table of the contract created with
 * the columns docs/contracts.md#tables lists and registered (subject column, pseudonym columns by kind); a contract
 * that gains a field adds its column; a change masq does not make is refused in one line and changes nothing; the
 * login contract given explicitly changes nothing against no contract at all.
 */
const dir = mkdtempSync(join(tmpdir(), "masq-contract-migrate-"));
const PURCHASE = readFileSync(join(REPO_ROOT, "contracts", "examples", "purchase.yaml"), "utf8");
const PATH = `${dirname(MASQ_BIN)}:${dirname(process.execPath)}:${process.env.PATH ?? ""}`;

let pgdb: TestDatabase;
let client: pg.Client;

before(async () => {
  pgdb = await createTestDatabase();
  client = new pg.Client({ connectionString: pgdb.url });
  await client.connect();
});
after(async () => {
  await client.end();
  await pgdb.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A contract file: purchase.yaml changed by `edit` (text replaced), under `name`. */
function contractFile(name: string, ...edits: [string, string][]): string {
  let text = PURCHASE;
  for (const [from, to] of edits) {
    assert.ok(text.includes(from), `the example still has ${from}`);
    text = text.replace(from, to);
  }
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

const migrate = (url: string, ...args: string[]) => runMasq(["migrate", ...args], { DATABASE_URL: url, MASQ_LOG_LEVEL: "info" });

/** Every table's columns and types in schema public, and masq's registration of each: what migrate may change. */
async function catalog(c: pg.Client = client): Promise<string[]> {
  const columns = await c.query<{ r: string }>(
    `SELECT table_name || '.' || column_name || ' ' || data_type || coalesce('(' || character_maximum_length || ')', '') || ' ' || is_nullable AS r
     FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position`,
  );
  const tables = await c.query<{ r: string }>("SELECT relation::text || ' subject ' || subject_column AS r FROM masq.target_tables ORDER BY 1");
  const pseudonyms = await c.query<{ r: string }>(
    "SELECT relation::text || '.' || column_name || ' ' || kind || ' ' || recoverable AS r FROM masq.target_pseudonym_columns ORDER BY relation::text, column_name",
  );
  const grants = await c.query<{ r: string }>(
    "SELECT c.relname || ' analyst ' || has_table_privilege('masq_analyst', c.oid, 'SELECT') AS r FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY 1",
  );
  return [...columns.rows, ...tables.rows, ...pseudonyms.rows, ...grants.rows].map((x) => x.r);
}

/** A table's indexes as pg_indexes shows them: "name (key)". */
async function waitUntil(cond: () => Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  for (const until = Date.now() + ms; !(await cond()); ) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function indexesOf(table: string, c: pg.Client = client): Promise<string[]> {
  const r = await c.query<{ r: string }>(
    "SELECT indexname || ' ' || substring(indexdef from ' USING btree (.*)$') AS r FROM pg_indexes WHERE format('%I.%I', schemaname, tablename) = $1 ORDER BY indexname",
    [table],
  );
  return r.rows.map((x) => x.r);
}

const PURCHASES = [
  "purchases.event_type character varying(32) YES",
  "purchases.order_id character varying(64) YES",
  "purchases.customer_id character varying(128) YES",
  "purchases.masked_email text YES",
  "purchases.card_last4_hash text YES",
  "purchases.card_brand character varying(16) YES",
  "purchases.amount_cents bigint YES",
  "purchases.currency character varying(3) YES",
  "purchases.ordered_at timestamp with time zone YES",
  "purchases.sns_message_id text YES",
  "purchases.create_date date YES",
];

describe("masq migrate --contract", () => {
  test("purchase.yaml (docs/contracts.md's block): public.purchases created and registered, not the login table; again, a no-op", async () => {
    const [r] = await runDocCommands("contracts-migrate", { env: { PATH, HOME: process.env.HOME, DATABASE_URL: pgdb.url } });
    assert.equal(r!.code, 0, r!.stdout + r!.stderr);
    assert.match(r!.stdout, /"table":"public.purchases".*"msg":"contract table created"/);
    assert.deepEqual(await catalog(), [
      ...PURCHASES,
      "purchases subject customer_id",
      "purchases.card_last4_hash card_last4 false",
      "purchases.masked_email email true",
      "purchases analyst true",
    ]);

    // Indexes for what the lifecycle looks up: the subject (erasure, export) and the recoverable pseudonym column
    // (values_in_use); not the hash column, which masq never looks up.
    assert.match(r!.stdout, /"index":"purchases_customer_id_[0-9a-f]{8}_idx".*"msg":"index created for the lifecycle's lookups"/);
    const indexes = await indexesOf("public.purchases");
    assert.deepEqual(
      indexes.map((i) => i.replace(/_[0-9a-f]{8}_idx/, "_…_idx")),
      ["purchases_customer_id_…_idx (customer_id)", "purchases_masked_email_…_idx (masked_email)"],
    );

    const again = await migrate(pgdb.url, "--contract", join(REPO_ROOT, "contracts", "examples", "purchase.yaml"));
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.doesNotMatch(again.stdout, /created|added/);
    assert.equal(again.stderr, "");
    assert.equal((await catalog()).length, PURCHASES.length + 4);
    assert.deepEqual(await indexesOf("public.purchases"), indexes);
  });

  test("a contract that gains a field: its column added (nullable), its pseudonym column registered; MASQ_CONTRACT names the file, MASQ_TABLE is not used", async () => {
    const file = contractFile("gains.yaml", [
      "      amount_cents:\n",
      "      phone:\n        type: string\n        max_length: 32\n        required: false\n        treatment: hash\n        kind: phone\n        column: phone_hash\n      gift:\n        type: boolean\n        required: false\n        treatment: keep\n        column: gift\n      amount_cents:\n",
    ]);
    const r = await runMasq(["migrate"], { DATABASE_URL: pgdb.url, MASQ_CONTRACT: file, MASQ_TABLE: "other_logins" });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /"msg":"MASQ_TABLE is not used with a contract file: the contract names its tables, and the login table is neither created nor registered"/);
    assert.match(r.stdout, /"columns":\["phone_hash","gift"\].*"msg":"columns added to a contract table"/);
    const now = await catalog();
    assert.ok(now.includes("purchases.phone_hash text YES") && now.includes("purchases.gift boolean YES"), now.join("\n"));
    assert.ok(now.includes("purchases.phone_hash phone false"), now.join("\n"));
    assert.ok(!now.some((l) => l.startsWith("other_logins")), now.join("\n"));
  });

  test("the example again, without those fields: their columns are kept, said once", async () => {
    const before = await catalog();
    const r = await migrate(pgdb.url, "--contract", join(REPO_ROOT, "contracts", "examples", "purchase.yaml"));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /"columns":\["phone_hash","gift"\].*"msg":"columns the contract does not write are kept/);
    assert.deepEqual(await catalog(), before);
  });

  test("a retype is refused in one line naming table, column, have and need; exit 2; nothing changes, not even what else it asks", async () => {
    const before = await catalog();
    const file = contractFile(
      "retype.yaml",
      ["      amount_cents:\n        type: integer\n", "      amount_cents:\n        type: string\n        max_length: 20\n"],
      ["      currency:\n", "      note:\n        type: string\n        max_length: 10\n        treatment: keep\n        column: note\n      currency:\n"],
    );
    const r = await migrate(pgdb.url, "--contract", file);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.equal(
      r.stderr,
      "masq: a change masq migrate does not make (table public.purchases): column public.purchases.amount_cents is bigint; field amount_cents needs text or varchar(20) or longer: rename the column (or change it by hand) or give the field another column, then run masq migrate again\n",
    );
    assert.deepEqual(await catalog(), before);
  });

  test("a pseudonym column whose kind changes is refused in one line; exit 2; nothing changes", async () => {
    const before = await catalog();
    const r = await migrate(pgdb.url, "--contract", contractFile("kind.yaml", ["kind: card_last4", "kind: card"]));
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /^masq: [^\n]*column public\.purchases\.card_last4_hash holds pseudonyms of kind card_last4 \(hash\), the contract makes it of kind card \(hash\)[^\n]*\n$/);
    const treatment = await migrate(pgdb.url, "--contract", contractFile("treatment.yaml", ["        treatment: hash\n        kind: card_last4", "        treatment: pseudonymize\n        kind: card_last4"]));
    assert.equal(treatment.code, 2, treatment.stdout + treatment.stderr);
    assert.match(treatment.stderr, /^masq: [^\n]*of kind card_last4 \(hash\), the contract makes it of kind card_last4 \(pseudonymize\)[^\n]*\n$/);
    assert.deepEqual(await catalog(), before);
  });

  test("masq check with a contract: a line per table saying what migrate would do, or why it would refuse", async () => {
    const check = (file: string) =>
      runMasq(["check", "--contract", file], {
        DATABASE_URL: pgdb.url,
        QUEUE_URL: "http://127.0.0.1:1/000000000000/nowhere",
        AWS_ACCESS_KEY_ID: "test",
        AWS_SECRET_ACCESS_KEY: "test",
        MASQ_CONNECT_TIMEOUT_SECONDS: "2",
        MASQ_MASTER_KEY: Buffer.alloc(32, 7).toString("base64"),
      });
    const lines = (out: string) => out.split("\n").filter((l) => / contract( table)?:/.test(l));
    const same = await check(join(REPO_ROOT, "contracts", "examples", "purchase.yaml"));
    assert.deepEqual(lines(same.stdout), [
      "ok    contract: purchase → purchases (11 fields, unknown fields: quarantine)",
      "ok    contract table: public.purchases has the contract's columns and is registered (kept, not written: phone_hash, gift)",
    ]);
    const more = await check(contractFile("more.yaml", ["      currency:\n", "      note:\n        type: string\n        max_length: 9\n        treatment: hash\n        kind: note\n        column: note_hash\n      currency:\n"]));
    assert.match(lines(more.stdout)[1]!, /^ok {4}contract table: public\.purchases exists \(kept, not written: phone_hash, gift\); masq migrate --contract adds column note_hash and registers pseudonym column note_hash$/);
    const retype = await check(join(dir, "retype.yaml"));
    assert.match(lines(retype.stdout)[1]!, /^FAIL {2}contract table: a change masq migrate does not make \(table public\.purchases\): column public\.purchases\.amount_cents is bigint;/);
    assert.equal(retype.code, 2);
    const fresh = await check(join(REPO_ROOT, "contracts", "examples", "page-view.yaml"));
    assert.match(lines(fresh.stdout)[1]!, /^ok {4}contract table: public\.page_views does not exist yet; masq migrate --contract creates it, with index page_views_user_id_[0-9a-f]{8}_idx on user_id \(subject\)$/);
    assert.equal((await client.query<{ t: string | null }>("SELECT to_regclass('public.page_views')::text AS t")).rows[0]!.t, null, "check writes nothing");
  });

  test("a contract that does not read: exit 2 before connecting, its first error and how to see all", async () => {
    const r = await migrate("postgres://nobody@127.0.0.1:1/none", "--contract", contractFile("broken.yaml", ["        max_length: 64\n", ""]));
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /^masq: invalid setting \(--contract\): .*broken\.yaml:\d+:\d+: event type purchase, field order_id: a string field needs max_length; masq check --offline lists every error\n$/);
  });
});

describe("masq migrate --contract, other databases", () => {
  test("two event types: both tables, each registered with its subject; run twice at once, both succeed", async () => {
    const db = await createTestDatabase();
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      const file = join(dir, "two.yaml");
      writeFileSync(
        file,
        `${PURCHASE.replace("events:\n", "events:\n  refund:\n    match: { field: type, equals: refund }\n    table: shop.refunds\n    subject: account\n    unknown: quarantine\n    fields:\n      type:\n        type: string\n        max_length: 32\n        treatment: keep\n        column: event_type\n      account:\n        type: string\n        max_length: 64\n        treatment: keep\n        column: account\n      card:\n        type: string\n        max_length: 64\n        treatment: pseudonymize\n        kind: account\n        column: masked_account\n      at:\n        type: timestamp\n        treatment: generalize\n        to: hour\n        column: refunded_hour\n")}`,
      );
      await c.query("CREATE SCHEMA shop");
      const runs = await Promise.all([migrate(db.url, "--contract", file), migrate(db.url, "--contract", file)]);
      for (const r of runs) assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(runs.filter((r) => /"table":"shop.refunds".*contract table created/.test(r.stdout)).length, 1);
      const refunds = await c.query<{ r: string }>("SELECT column_name || ' ' || data_type AS r FROM information_schema.columns WHERE table_schema = 'shop' ORDER BY ordinal_position");
      assert.deepEqual(refunds.rows.map((x) => x.r), ["event_type character varying", "account character varying", "masked_account text", "refunded_hour timestamp with time zone"]);
      const registered = await c.query<{ r: string }>("SELECT relation::text || ' ' || subject_column AS r FROM masq.target_tables ORDER BY 1");
      assert.deepEqual(registered.rows.map((x) => x.r), ["purchases customer_id", "shop.refunds account"]);
      const pseudonyms = await c.query<{ r: string }>("SELECT relation::text || '.' || column_name || ' ' || kind AS r FROM masq.target_pseudonym_columns ORDER BY 1");
      assert.deepEqual(pseudonyms.rows.map((x) => x.r), ["purchases.card_last4_hash card_last4", "purchases.masked_email email", "shop.refunds.masked_account account"]);
    } finally {
      await c.end();
      await db.close();
    }
  });

  test("an existing table masq will not register (a trigger) is refused in one line, nothing registered", async () => {
    const db = await createTestDatabase();
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      await c.query(`CREATE TABLE purchases (customer_id text);
        CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
        CREATE TRIGGER t BEFORE INSERT ON purchases FOR EACH ROW EXECUTE FUNCTION noop()`);
      const r = await migrate(db.url, "--contract", join(REPO_ROOT, "contracts", "examples", "purchase.yaml"));
      assert.equal(r.code, 2, r.stdout + r.stderr);
      assert.match(r.stderr, /^masq: a table masq will not register \(table public\.purchases\): [^\n]*trigger[^\n]*\n$/);
      assert.equal((await c.query("SELECT 1 FROM information_schema.columns WHERE table_name = 'purchases'")).rowCount, 1, "no column added");
      assert.equal((await c.query("SELECT 1 FROM masq.target_tables")).rowCount, 0);
    } finally {
      await c.end();
      await db.close();
    }
  });

  test("a column to add while a long query reads the table: short waits, retried, inserts not stalled behind it; added once the reader is done", async () => {
    const db = await createTestDatabase();
    const [c, reader] = [new pg.Client({ connectionString: db.url }), new pg.Client({ connectionString: db.url })];
    await c.connect();
    await reader.connect();
    try {
      assert.equal((await migrate(db.url, "--contract", join(REPO_ROOT, "contracts", "examples", "purchase.yaml"))).code, 0);
      const file = contractFile("wait.yaml", ["      currency:\n", "      note:\n        type: string\n        max_length: 10\n        required: false\n        treatment: keep\n        column: note\n      currency:\n"]);
      await reader.query("BEGIN");
      await reader.query("SELECT count(*) FROM purchases");
      const running = runMasq(["migrate", "--contract", file], { DATABASE_URL: db.url, MASQ_CONNECT_TIMEOUT_SECONDS: "60" });
      // Once its ALTER TABLE waits for the reader, another session's insert queues behind it: for one short wait only.
      for (let i = 0; i < 200; i++) {
        const w = await c.query("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE%'");
        if (w.rowCount === 1) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      await c.query("SET lock_timeout = '15s'");
      await c.query("INSERT INTO purchases (customer_id) VALUES ('c-1')");
      assert.equal((await c.query("SELECT 1 FROM information_schema.columns WHERE table_name = 'purchases' AND column_name = 'note'")).rowCount, 0);
      await reader.query("COMMIT");
      const r = await running;
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /a lock masq waits for is held by another session|lock timeout/);
      assert.equal((await c.query("SELECT 1 FROM information_schema.columns WHERE table_name = 'purchases' AND column_name = 'note'")).rowCount, 1);
    } finally {
      await reader.end();
      await c.end();
      await db.close();
    }
  });

  test("an existing table with rows: its subject (an integer, as the text the lookups compare) and recoverable pseudonym columns indexed; one the owner made is kept; the lookups use them", async () => {
    const db = await createTestDatabase();
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      const file = join(dir, "orders.yaml");
      writeFileSync(
        file,
        `version: 1
events:
  order:
    match: all
    table: orders
    subject: account
    unknown: quarantine
    fields:
      account: { type: integer, treatment: keep, column: account }
      email: { type: string, max_length: 320, treatment: pseudonymize, kind: email, column: masked_email }
      phone: { type: string, max_length: 32, treatment: pseudonymize, kind: phone, column: masked_phone }
      card: { type: string, max_length: 4, treatment: hash, kind: card, column: card_hash }
      $sent_at: { type: timestamp, treatment: generalize, to: day, column: create_date }
`,
      );
      await c.query(`CREATE TABLE orders (account bigint, masked_email text, masked_phone text, card_hash text, create_date date);
        INSERT INTO orders SELECT g, encode(sha256(('e' || g)::bytea), 'hex'), encode(sha256(('p' || g)::bytea), 'hex'),
                                  encode(sha256(('c' || g % 100)::bytea), 'hex'), DATE '2026-12-01' FROM generate_series(1, 50000) g;
        CREATE INDEX owners_phone_lookup ON orders (masked_phone)`);
      const check = await runMasq(["check", "--contract", file], {
        DATABASE_URL: db.url,
        QUEUE_URL: "http://127.0.0.1:1/000000000000/nowhere",
        AWS_ACCESS_KEY_ID: "test",
        AWS_SECRET_ACCESS_KEY: "test",
        MASQ_CONNECT_TIMEOUT_SECONDS: "2",
        MASQ_MASTER_KEY: Buffer.alloc(32, 7).toString("base64"),
      });
      assert.match(
        check.stdout,
        /\nok {4}contract table: public\.orders exists; masq migrate --contract [^\n]* and creates indexes orders_account_[0-9a-f]{8}_idx on account \(subject\), orders_masked_email_[0-9a-f]{8}_idx on masked_email \(pseudonyms of kind email\)\n/,
        check.stdout,
      );

      const r = await migrate(db.url, "--contract", file);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /"msg":"building an index on a table that has rows, CONCURRENTLY: reads and writes go on"/);
      const indexes = await indexesOf("public.orders", c);
      assert.deepEqual(
        indexes.map((i) => i.replace(/_[0-9a-f]{8}_idx/, "_…_idx")),
        ["orders_account_…_idx (((account)::text))", "orders_masked_email_…_idx (masked_email)", "owners_phone_lookup (masked_phone)"],
      );
      const again = await migrate(db.url, "--contract", file);
      assert.equal(again.code, 0, again.stdout + again.stderr);
      assert.doesNotMatch(again.stdout, /index/);
      assert.deepEqual(await indexesOf("public.orders", c), indexes);

      // The lookups themselves, as 106_contract_tables.sql writes them: erasure's and export's by subject
      // (masq.subject_sql), values_in_use's by pseudonym.
      await c.query("ANALYZE orders");
      const subject = (await c.query<{ q: string }>("SELECT format('SELECT x.ctid FROM %s x WHERE %s = %L LIMIT 1000', 'orders'::regclass, masq.subject_sql('orders'::regclass, 'x'), '4242') AS q")).rows[0]!.q;
      const inUse = `SELECT DISTINCT 'email'::text, x.masked_email::text FROM orders x WHERE x.masked_email::text = ANY (ARRAY[encode(sha256('e4242'::bytea), 'hex')])`;
      for (const [query, index] of [[subject, "orders_account_"], [inUse, "orders_masked_email_"]] as const) {
        const plan = (await c.query<{ "QUERY PLAN": string }>(`EXPLAIN ${query}`)).rows.map((x) => x["QUERY PLAN"]).join("\n");
        assert.match(plan, new RegExp(`Index.* (?:on|using) ${index}[0-9a-f]{8}_idx`), plan);
      }
    } finally {
      await c.end();
      await db.close();
    }
  });

  test("indexes on a table with rows are built CONCURRENTLY: a writer goes on while the build waits; an invalid index a cut-short build left is built again; an owner's index in another collation does not count", async () => {
    const db = await createTestDatabase();
    const c = new pg.Client({ connectionString: db.url });
    const open = new pg.Client({ connectionString: db.url });
    const writer = new pg.Client({ connectionString: db.url });
    await Promise.all([c.connect(), open.connect(), writer.connect()]);
    try {
      const file = join(dir, "visits.yaml");
      writeFileSync(
        file,
        `version: 1
events:
  visit:
    match: all
    table: visits
    subject: account
    unknown: quarantine
    fields:
      account: { type: string, max_length: 64, treatment: keep, column: account }
      email: { type: string, max_length: 320, treatment: pseudonymize, kind: email, column: masked_email }
      $sent_at: { type: timestamp, treatment: generalize, to: day, column: create_date }
`,
      );
      const emailIndex = indexName({ schema: "public", name: "visits" }, "masked_email");
      await c.query(`CREATE TABLE visits (account varchar(64), masked_email varchar(64), create_date date);
        INSERT INTO visits SELECT 'a' || g, encode(sha256(('e' || g)::bytea), 'hex'), DATE '2026-12-01' FROM generate_series(1, 20000) g;
        CREATE INDEX owners_account_c ON visits (account COLLATE "C");
        CREATE INDEX "${emailIndex}" ON visits (masked_email);
        UPDATE pg_index SET indisvalid = false WHERE indexrelid = '"${emailIndex}"'::regclass`);
      // A transaction that has written to the table and stays open: a CONCURRENTLY build waits for it to end, and
      // meanwhile takes no lock that stops anyone else writing (a plain CREATE INDEX would, behind its SHARE lock).
      await open.query("BEGIN; INSERT INTO visits VALUES ('held', NULL, DATE '2026-12-02')");
      const running = migrate(db.url, "--contract", file);
      await waitUntil(async () => (await c.query("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'")).rowCount === 1, "the build to wait for the open transaction");
      await writer.query({ text: "INSERT INTO visits VALUES ('during', NULL, DATE '2026-12-02')", query_timeout: 5_000 } as pg.QueryConfig);
      await open.query("COMMIT");
      const r = await running;
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /"msg":"dropping an index a build cut short left invalid, to build it again"/);
      const indexes = await c.query<{ name: string; valid: boolean }>(
        "SELECT c.relname AS name, i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'visits'::regclass ORDER BY 1",
      );
      assert.deepEqual(
        indexes.rows.map((x) => `${x.name.replace(/_[0-9a-f]{8}_idx/, "_…_idx")} ${x.valid}`),
        ["owners_account_c true", "visits_account_…_idx true", "visits_masked_email_…_idx true"],
      );
      assert.equal(Number((await c.query<{ n: string }>("SELECT count(*) AS n FROM visits")).rows[0]!.n), 20_002);
    } finally {
      await Promise.all([c.end(), open.end().catch(() => undefined), writer.end()]);
      await db.close();
    }
  });

  test("masq's name for an index taken by another relation: refused in one line, exit 2, nothing made", async () => {
    const db = await createTestDatabase();
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      const name = indexName({ schema: "public", name: "page_views" }, "user_id");
      await c.query(`CREATE TABLE "${name}" (x int)`);
      const r = await migrate(db.url, "--contract", join(REPO_ROOT, "contracts", "examples", "page-view.yaml"));
      assert.equal(r.code, 2, r.stdout + r.stderr);
      assert.match(r.stderr, new RegExp(`^masq: a change masq migrate does not make \\(table public\\.page_views\\): index name public\\.${name}, which masq gives the index on page_views\\.user_id \\(subject\\), is taken by another relation: [^\\n]*\\n$`));
      assert.equal((await c.query<{ t: string | null }>("SELECT to_regclass('public.page_views')::text AS t")).rows[0]!.t, null);
    } finally {
      await c.end();
      await db.close();
    }
  });

  test("the login contract given explicitly: the same login table and registration as without a contract", async () => {
    const [a, b] = [await createTestDatabase(), await createTestDatabase()];
    const [ca, cb] = [new pg.Client({ connectionString: a.url }), new pg.Client({ connectionString: b.url })];
    await ca.connect();
    await cb.connect();
    try {
      const none = await migrate(a.url);
      const login = await migrate(b.url, "--contract", join(REPO_ROOT, "contracts", "login.yaml"));
      assert.equal(none.code, 0, none.stdout + none.stderr);
      assert.equal(login.code, 0, login.stdout + login.stderr);
      const expected = await catalog(ca);
      assert.ok(expected.includes("user_logins.masked_ip character varying(256) YES"), expected.join("\n"));
      assert.deepEqual(await catalog(cb), expected);
    } finally {
      await ca.end();
      await cb.end();
      await a.close();
      await b.close();
    }
  });
});
