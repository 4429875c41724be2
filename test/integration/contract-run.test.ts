import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { sendBodies } from "../../src/ops/demo.ts";
import { openRunContract } from "../../src/ingest/run-contract.ts";
import { createSqsHandler } from "../../src/ingest/lambda-handler.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { masqEnv } from "../helpers/masq-process.ts";
import { TEST_KEY, TEST_MASTER_KEY, TEST_MASTER_KEY_HEX, testKeys } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";
import { decryptVault } from "../helpers/vault-check.ts";

/**
 * `masq run` with MASQ_CONTRACT naming a contract other than login's: each event type's rows in its own table, with
 * the pseudonyms `masq preview` gives for the same key; refused events quarantined with the contract's reason, the
 * field's path, a copy that keeps only `keep` fields in clear and the pseudonyms it shows; vault rows of the declared
 * kinds; nothing written twice; no PII in what masq prints.
 */
const fx = usePipelineFixture();

const EXAMPLES = fileURLToPath(new URL("../../contracts/examples/", import.meta.url));
const KEY_HEX = Buffer.from(TEST_KEY).toString("hex");
const TUNING = { MASQ_BATCH_SIZE: "50", MASQ_WAIT_TIME_SECONDS: "1", MASQ_BATCH_WAIT_MS: "50", MASQ_VISIBILITY_TIMEOUT: "10" };

const PURCHASES_DDL = (table: string) => `CREATE TABLE ${table} (
  event_type text, order_id text, customer_id text, masked_email text, card_last4_hash text, card_brand text,
  amount_cents bigint, currency text, ordered_at timestamptz, sns_message_id text, create_date date)`;
const PAGE_VIEWS_DDL = (table: string) => `CREATE TABLE ${table} (
  user_id text, page text, ip_network text, viewed_hour timestamptz, duration_bucket_ms bigint, create_date date)`;

/** purchase.yaml's purchase without the SNS envelope, and page-view.yaml's page view told apart by `type`. */
function twoEventContract(dir: string): string {
  const purchase = readFileSync(join(EXAMPLES, "purchase.yaml"), "utf8")
    .replace(/^# yaml-language-server.*\n/m, "")
    .replace("    envelope: sns\n", "")
    .replace("    table: purchases\n", "    table: shop.purchases\n")
    .replace(/ {6}\$sns\.MessageId:\n(?: {8}.*\n)+/, "");
  const pageView = readFileSync(join(EXAMPLES, "page-view.yaml"), "utf8")
    .split("\nevents:\n")[1]!
    .replace("    match: all\n", "    match:\n      field: type\n      equals: page_view\n")
    .replace("    fields:\n", "    fields:\n      type:\n        type: string\n        max_length: 32\n        treatment: drop\n");
  const file = join(dir, "two-events.yaml");
  writeFileSync(file, `${purchase.trimEnd()}\n${pageView}`);
  return file;
}

const EMAIL = "ada@example.com";
const purchase = (extra: Record<string, unknown> = {}, card: Record<string, unknown> = {}) =>
  JSON.stringify({
    type: "purchase",
    order_id: "o-1",
    customer_id: "c-42",
    email: EMAIL,
    card: { last4: "4242", brand: "visa", ...card },
    amount_cents: 1999,
    currency: "EUR",
    ordered_at: "2026-12-06T21:04:05Z",
    ...extra,
  });
const pageView = JSON.stringify({ type: "page_view", user_id: "u-17", page: "/pricing", ip: "203.0.113.77", viewed_at: "2026-12-06T21:04:05Z", duration_ms: 4321 });

/** What `masq preview` prints for these bodies with the tests' pseudonym key: the stored rows, or the refusals. */
async function preview(contract: string, bodies: string[]): Promise<Record<string, unknown>[]> {
  const r = await runMasq(["preview", "--contract", contract, "--sent-at", new Date().toISOString()], { MASQ_PSEUDONYM_KEY: KEY_HEX }, `${bodies.join("\n")}\n`);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** A table's rows as preview shows them: timestamps as instants, numbers as numbers, dates as text. */
async function tableRows(table: string): Promise<Record<string, unknown>[]> {
  const { rows } = await fx.db.pool.query<Record<string, unknown>>(`SELECT *, create_date::text AS create_date FROM ${table} ORDER BY 1, 2`);
  return rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v instanceof Date ? v.getTime() : typeof v === "string" && /^\d+$/.test(v) && k.endsWith("_ms") ? Number(v) : v])));
}

function normalised(row: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(row).map(([k, v]) => [k, typeof v === "string" && /^\d{4}-\d{2}-\d{2}T/.test(v) ? Date.parse(v) : k === "amount_cents" && typeof v === "number" ? String(v) : v]),
  );
}

/** `masq migrate --contract` as the owner: creates what is missing and registers each table, as run requires. */
async function migrateContract(contract: string): Promise<void> {
  const r = await runMasq(["migrate", "--contract", contract], { DATABASE_URL: fx.pgdb.url });
  assert.equal(r.code, 0, r.stderr + r.stdout);
}

async function drain(contract: string, bodies: string[], extra: Record<string, string> = {}) {
  const queueUrl = fx.sqs.newQueue();
  await sendBodies(fx.sqs.client, queueUrl, bodies);
  const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { ...TUNING, MASQ_CONTRACT: contract, ...extra } });
  return runMasq(["run", "--drain"], env);
}

test("a two-event-type contract: rows in each table as preview gives them, refusals quarantined by the contract, vault of the declared kind", async () => {
  await fx.reset();
  const dir = mkdtempSync(join(tmpdir(), "masq-contract-"));
  const contract = twoEventContract(dir);
  await fx.db.pool.query("CREATE SCHEMA IF NOT EXISTS shop");
  await fx.db.pool.query(PURCHASES_DDL("shop.purchases").replace(", sns_message_id text", ""));
  await fx.db.pool.query(PAGE_VIEWS_DDL("public.page_views"));
  await migrateContract(contract);

  const good = [purchase(), purchase({ order_id: "o-2" }), pageView];
  const bad: [string, string, string][] = [
    [purchase({ coupon: "FREE" }), "unclassified_field", "field coupon"],
    [purchase({}, { cvc: "123" }), "unclassified_field", "field card.cvc"],
    [JSON.stringify({ type: "refund", customer_id: "c-42" }), "unknown_event", "field type"],
    [purchase({ amount_cents: "1999" }), "wrong_type", "field amount_cents"],
    [purchase({ currency: "EURO" }), "too_long", "field currency"],
    ['{"type": "purchase", "email": ', "invalid_json", "the body"],
  ];
  const r = await drain(contract, [...good, ...bad.map(([b]) => b)], { MASQ_TABLE: "ignored_table" });
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(-3000));
  // No PII in what masq printed; MASQ_TABLE named, and ignored.
  for (const pii of [EMAIL, "4242", "203.0.113.77", "FREE"]) assert.ok(!(r.stdout + r.stderr).includes(pii), `${pii} printed`);
  assert.match(r.stdout, /MASQ_TABLE is ignored with a contract/);
  // The run's counters (the "pipeline stopped" line) count rows by event type, and refusals by the contract's reasons.
  const stopped = r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as { msg: string; writtenByEvent?: object; quarantined?: object }).find((l) => l.msg === "pipeline stopped")!;
  assert.deepEqual(stopped.writtenByEvent, { purchase: 2, page_view: 1 });
  assert.deepEqual(stopped.quarantined, { unclassified_field: 2, unknown_event: 1, wrong_type: 1, too_long: 1, invalid_json: 1 });
  assert.equal((await fx.db.pool.query<{ t: string | null }>("SELECT to_regclass('public.ignored_table')::text AS t")).rows[0]!.t, null, "no table created");

  const expected = await preview(contract, good);
  const rowsOf = (table: string) => expected.filter((e) => e.table === table).map((e) => normalised(e.row as Record<string, unknown>));
  const sortRows = (rows: Record<string, unknown>[]) => rows.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
  assert.deepEqual(sortRows((await tableRows("shop.purchases")).map(normalised)), sortRows(rowsOf("shop.purchases")));
  assert.deepEqual((await tableRows("public.page_views")).map(normalised), rowsOf("page_views"));

  const maskedEmail = (expected[0]!.row as Record<string, string>).masked_email!;
  const cardHash = (expected[0]!.row as Record<string, string>).card_last4_hash!;
  const q = await fx.db.pool.query<{ reason: string; detail: string; body: string | null; user_id: string | null; pseudonyms: string[] | null; sealed: boolean }>(
    "SELECT reason, detail, body, user_id, pseudonyms, body_ciphertext IS NOT NULL AS sealed FROM masq.quarantine ORDER BY received_at, message_id",
  );
  assert.deepEqual(
    q.rows.map((x) => `${x.reason} ${x.detail}`).sort(),
    bad.map(([, reason, detail]) => `${reason} ${detail}`).sort(),
  );
  for (const x of q.rows) {
    assert.ok(x.sealed, "the original is sealed, for replay");
    assert.ok(!(x.body ?? "").includes(EMAIL) && !(x.body ?? "").includes("4242") && !(x.body ?? "").includes("FREE"), x.body ?? "");
  }
  const coupon = q.rows.find((x) => x.detail === "field coupon")!;
  assert.deepEqual(JSON.parse(coupon.body!), {
    type: "purchase",
    order_id: "o-1",
    customer_id: "c-42",
    email: `hmac:${maskedEmail}`,
    card: { last4: `hmac:${cardHash}`, brand: "visa" },
    amount_cents: 1999,
    currency: "EUR",
    ordered_at: "2026-12-06T21:04:05Z",
    coupon: "[string: 4 chars]",
  });
  assert.equal(coupon.user_id, "c-42");
  assert.deepEqual([...coupon.pseudonyms!].sort(), [`card_last4:${cardHash}`, `email:${maskedEmail}`]);
  const unknown = q.rows.find((x) => x.reason === "unknown_event")!;
  assert.deepEqual(JSON.parse(unknown.body!), { type: "[string: 6 chars]", customer_id: "[string: 4 chars]" }, "an unknown event keeps nothing in clear");
  assert.equal(unknown.user_id, null);
  assert.equal(q.rows.find((x) => x.reason === "invalid_json")!.body, null);

  // The quarantine's list selects by a contract's reason code, and shows no value the contract does not keep.
  const listed = await runMasq(["quarantine", "list", "--reason-code", "unclassified_field"], { DATABASE_URL: fx.pgdb.url });
  assert.equal(listed.code, 0, listed.stderr);
  assert.equal(listed.stdout.match(/unclassified_field/g)?.length, 2, listed.stdout);
  assert.ok(!listed.stdout.includes(EMAIL) && !listed.stdout.includes("FREE"), listed.stdout);

  // The vault holds the email under its kind, once; the hashed card digits never.
  const vault = await decryptVault(fx.db.pool, new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY)));
  assert.deepEqual(
    vault.map((v) => [v.kind, v.pseudonym, v.value]),
    [["email", maskedEmail, EMAIL]],
  );

  // Redelivered (the same message ids, again): the ledger writes nothing twice.
  const committer = openRunContract(contract)!;
  const keys = await testKeys(fx.db);
  const at = new Date();
  const messages = [...good, bad[0]![0]].map((body, i) => ({ messageId: `again-${i}`, body, sentAt: at, receivedAt: at }));
  const first = await committer.commit(fx.db.pool, keys, messages);
  assert.deepEqual([first.written, first.quarantined, first.duplicates], [3, 1, 0]);
  assert.deepEqual(first.writtenByEvent, { purchase: 2, page_view: 1 });
  const second = await committer.commit(fx.db.pool, keys, messages);
  assert.deepEqual([second.written, second.quarantined, second.duplicates], [0, 0, 4]);
  const counts = await fx.db.pool.query<{ p: number; v: number; q: number; vault: number }>(
    "SELECT (SELECT count(*)::int FROM shop.purchases) AS p, (SELECT count(*)::int FROM page_views) AS v, (SELECT count(*)::int FROM masq.quarantine) AS q, (SELECT count(*)::int FROM masq.vault) AS vault",
  );
  assert.deepEqual(counts.rows[0], { p: 4, v: 2, q: bad.length + 1, vault: 1 });

  // Vault values deleted meanwhile (an erasure or a prune advances the vault epoch): the sealer, which believed the
  // email in the vault and left it out, is refused, seals again, and the row's original is back in the vault.
  await fx.db.pool.query("BEGIN; SELECT masq.advance_vault_epoch(); DELETE FROM masq.vault; COMMIT");
  const after = await committer.commit(fx.db.pool, keys, [{ messageId: "after-erase", body: purchase({ order_id: "o-9" }), sentAt: at, receivedAt: at }]);
  assert.equal(after.written, 1);
  const again = await decryptVault(fx.db.pool, new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY)));
  assert.deepEqual(
    again.map((v) => [v.kind, v.pseudonym, v.value]),
    [["email", maskedEmail, EMAIL]],
  );
  keys.close();
});

test("the example contracts: purchases through an SNS envelope and page views, as preview gives them", async () => {
  await fx.reset();
  await fx.db.pool.query(PURCHASES_DDL("public.purchases"));
  await fx.db.pool.query("DROP TABLE IF EXISTS public.page_views");
  await fx.db.pool.query(PAGE_VIEWS_DDL("public.page_views"));
  for (const [file, table] of [
    ["purchase", "public.purchases"],
    ["page-view", "public.page_views"],
  ] as const) {
    await fx.db.pool.query("TRUNCATE masq.quarantine");
    const contract = join(EXAMPLES, `${file}.yaml`);
    await migrateContract(contract);
    const bodies = readFileSync(join(EXAMPLES, `${file}.jsonl`), "utf8").trim().split("\n");
    const r = await drain(contract, bodies);
    assert.equal(r.code, 0, r.stderr + r.stdout.slice(-3000));
    const expected = await preview(contract, bodies);
    const sortRows = (rows: Record<string, unknown>[]) => rows.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
    assert.deepEqual(
      sortRows((await tableRows(table)).map(normalised)),
      sortRows(expected.filter((e) => e.row !== undefined).map((e) => normalised(e.row as Record<string, unknown>))),
    );
    const q = await fx.db.pool.query<{ reason: string; detail: string }>("SELECT reason, detail FROM masq.quarantine WHERE reason = ANY($1)", [
      expected.filter((e) => e.quarantine !== undefined).map((e) => e.quarantine),
    ]);
    assert.deepEqual(
      q.rows.map((x) => `${x.reason} ${x.detail}`).sort(),
      expected
        .filter((e) => e.quarantine !== undefined)
        .map((e) => `${String(e.quarantine)} field ${String(e.path)}`)
        .sort(),
    );
  }
});

test("run refuses a contract whose table is missing (naming it and masq migrate --contract), and a broken contract file (exit 2)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "masq-contract-"));
  const contract = join(dir, "orders.yaml");
  writeFileSync(
    contract,
    readFileSync(join(EXAMPLES, "purchase.yaml"), "utf8").replace(/^# yaml-language-server.*\n/m, "").replace("    table: purchases\n", "    table: no_such_orders\n"),
  );
  const missing = await drain(contract, [purchase()]);
  assert.equal(missing.code, 1, missing.stderr);
  assert.equal(missing.stderr.trim().split("\n").length, 1, missing.stderr);
  assert.match(missing.stderr, /table public\.no_such_orders .*does not exist: run masq migrate --contract /);
  assert.equal((await fx.db.pool.query<{ t: string | null }>("SELECT to_regclass('public.no_such_orders')::text AS t")).rows[0]!.t, null, "run creates no contract table");

  await fx.db.pool.query("CREATE TABLE public.no_such_orders (order_id text)");
  const column = await drain(contract, [purchase()]);
  assert.equal(column.code, 1, column.stderr);
  assert.match(column.stderr, /table public\.no_such_orders has no column event_type \(field type\): run masq migrate --contract /);

  // Every column in place, but made by hand: not registered, so an erasure would skip it and a prune would delete the
  // vault values its rows use. Refused until the owner's migrate registers it; then it runs.
  await fx.db.pool.query("DROP TABLE public.no_such_orders");
  await fx.db.pool.query(PURCHASES_DDL("public.no_such_orders"));
  const unregistered = await drain(contract, [purchase()]);
  assert.equal(unregistered.code, 1, unregistered.stderr);
  assert.equal(unregistered.stderr.trim().split("\n").length, 1, unregistered.stderr);
  assert.match(unregistered.stderr, /table public\.no_such_orders is not registered for the lifecycle commands: run masq migrate --contract \S+orders\.yaml as the schema owner/);
  assert.equal((await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM public.no_such_orders")).rows[0]!.n, 0, "nothing written");
  await migrateContract(contract);
  const enveloped = readFileSync(join(EXAMPLES, "purchase.jsonl"), "utf8").split("\n")[0]!;
  const registered = await drain(contract, [enveloped]);
  assert.equal(registered.code, 0, registered.stderr + registered.stdout.slice(-3000));
  assert.equal((await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM public.no_such_orders")).rows[0]!.n, 1);

  // The contract edited after migrate (a kind changed) and run restarted without migrate: refused.
  const edited = join(dir, "edited.yaml");
  writeFileSync(edited, readFileSync(contract, "utf8").replace("kind: card_last4", "kind: card"));
  const kind = await drain(edited, [purchase()]);
  assert.equal(kind.code, 1, kind.stderr);
  assert.equal(kind.stderr.trim().split("\n").length, 1, kind.stderr);
  assert.match(
    kind.stderr,
    /table public\.no_such_orders has column card_last4_hash registered as kind card_last4 \(hash\), the contract makes it kind card \(hash\) \(field card\.last4\): run masq migrate --contract \S+edited\.yaml as the schema owner/,
  );

  // A pseudonymised column not registered (its vault values would be invisible to values_in_use): refused.
  await fx.db.pool.query("DELETE FROM masq.target_pseudonym_columns WHERE relation = 'public.no_such_orders'::regclass AND column_name = 'masked_email'");
  const column2 = await drain(contract, [purchase()]);
  assert.equal(column2.code, 1, column2.stderr);
  assert.match(column2.stderr, /table public\.no_such_orders has column masked_email \(field email\) not registered as a pseudonym column of kind email \(pseudonymize\): run masq migrate --contract /);
  assert.equal((await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM public.no_such_orders")).rows[0]!.n, 1, "nothing more written");

  // Retention needs a table to date rows by: a contract without create_date is refused in one line.
  const undated = join(dir, "undated.yaml");
  writeFileSync(undated, readFileSync(join(EXAMPLES, "purchase.yaml"), "utf8").replace(/ {6}\$sent_at:\n(?: {8}.*\n)+/, ""));
  const retention = await drain(undated, [], { MASQ_VAULT_RETENTION_DAYS: "30" });
  assert.equal(retention.code, 2, retention.stderr);
  assert.match(retention.stderr, /MASQ_VAULT_RETENTION_DAYS\).*no table of the contract \(MASQ_CONTRACT\) has a create_date/);

  const broken = join(dir, "broken.yaml");
  writeFileSync(broken, "version: 1\nevents:\n  purchase:\n    match: all\n    table: purchases\n    subject: nobody\n    fields: {}\n");
  const r = await drain(broken, [purchase()]);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, /\(MASQ_CONTRACT\): .*broken\.yaml:\d+:\d+: /);
});

test("the Lambda handler ingests by MASQ_CONTRACT too: rows in each table, refusals quarantined, a redelivered batch written once", async () => {
  await fx.reset();
  const dir = mkdtempSync(join(tmpdir(), "masq-contract-"));
  const contract = join(dir, "lambda.yaml");
  writeFileSync(contract, readFileSync(twoEventContract(dir), "utf8").replace("table: shop.purchases", "table: lam.purchases").replace("table: page_views", "table: lam.page_views"));
  await fx.db.pool.query("CREATE SCHEMA lam");
  await fx.db.pool.query(PURCHASES_DDL("lam.purchases").replace(", sns_message_id text", ""));
  await fx.db.pool.query(PAGE_VIEWS_DDL("lam.page_views"));
  const env = { DATABASE_URL: fx.pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_PSEUDONYM_KEY: KEY_HEX, MASQ_LOG_LEVEL: "silent", MASQ_CONTRACT: contract };
  // Made by hand, not registered: the cold start refuses, and writes nothing.
  const refused = createSqsHandler(env);
  try {
    await assert.rejects(refused({ Records: [{ messageId: "unregistered", body: purchase(), attributes: { SentTimestamp: String(Date.now()) } }] }), /table lam\.purchases is not registered .*: run masq migrate --contract \S+lambda\.yaml as the schema owner/);
  } finally {
    await refused.close();
  }
  assert.equal((await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM lam.purchases")).rows[0]!.n, 0);
  await migrateContract(contract);
  const h = createSqsHandler(env);
  try {
    const sent = String(Date.now());
    const records = [purchase(), pageView, purchase({ coupon: "FREE" })].map((body, i) => ({ messageId: `lambda-${i}`, body, attributes: { SentTimestamp: sent } }));
    for (let round = 0; round < 2; round++) assert.deepEqual(await h({ Records: records }), { batchItemFailures: [] });
    const counts = await fx.db.pool.query<{ p: number; v: number; q: string[] }>(
      "SELECT (SELECT count(*)::int FROM lam.purchases) AS p, (SELECT count(*)::int FROM lam.page_views) AS v, (SELECT array_agg(reason || ' ' || detail) FROM masq.quarantine) AS q",
    );
    assert.deepEqual(counts.rows[0], { p: 1, v: 1, q: ["unclassified_field field coupon"] });
    const masked = await fx.db.pool.query<{ masked_email: string }>("SELECT masked_email FROM lam.purchases");
    const expected = (await preview(contract, [purchase()]))[0]!.row as Record<string, string>;
    assert.equal(masked.rows[0]!.masked_email, expected.masked_email);
  } finally {
    await h.close();
  }
});

test("a row its table refuses is quarantined as db_rejected, its masked row as the copy, and the rest of the batch is written", async () => {
  await fx.reset();
  const dir = mkdtempSync(join(tmpdir(), "masq-contract-"));
  const contract = join(dir, "rej.yaml");
  writeFileSync(contract, readFileSync(twoEventContract(dir), "utf8").replace("table: shop.purchases", "table: rej.purchases").replace("table: page_views", "table: rej.page_views"));
  await fx.db.pool.query("CREATE SCHEMA rej");
  await fx.db.pool.query(PURCHASES_DDL("rej.purchases").replace(", sns_message_id text", "").replace("amount_cents bigint", "amount_cents bigint CHECK (amount_cents < 100000)"));
  await fx.db.pool.query(PAGE_VIEWS_DDL("rej.page_views"));
  const committer = openRunContract(contract)!;
  const keys = await testKeys(fx.db);
  try {
    const at = new Date();
    const bodies = [purchase(), purchase({ order_id: "o-big", amount_cents: 500000 }), pageView, purchase({ order_id: "o-3" })];
    const r = await committer.commit(fx.db.pool, keys, bodies.map((body, i) => ({ messageId: `rej-${i}`, body, sentAt: at, receivedAt: at })));
    assert.deepEqual([r.written, r.quarantined, r.rejected, r.duplicates], [3, 1, 1, 0]);
    const q = await fx.db.pool.query<{ reason: string; body: string; user_id: string; pseudonyms: string[] }>("SELECT reason, body, user_id, pseudonyms FROM masq.quarantine");
    assert.equal(q.rows.length, 1);
    const copy = JSON.parse(q.rows[0]!.body) as Record<string, unknown>;
    assert.equal(q.rows[0]!.reason, "db_rejected");
    assert.equal(copy.order_id, "o-big");
    assert.equal(q.rows[0]!.user_id, "c-42");
    assert.ok(!q.rows[0]!.body.includes(EMAIL));
    assert.deepEqual([...q.rows[0]!.pseudonyms].sort(), [`card_last4:${String(copy.card_last4_hash)}`, `email:${String(copy.masked_email)}`]);
    // The refused row's email is in the vault still: its pseudonym is in the record, and the other rows use it too.
    assert.equal((await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.vault WHERE kind = 'email'")).rows[0]!.n, 1);
  } finally {
    keys.close();
  }
});

test("MASQ_CONTRACT naming the shipped login contract runs the login path as it always did", async () => {
  await fx.reset();
  const login = fileURLToPath(new URL("../../contracts/login.yaml", import.meta.url));
  const body = JSON.stringify({ user_id: "u-login", app_version: "2.3.0", device_type: "ios", ip: "198.51.100.7", locale: "fr", device_id: "dev-1" });
  const r = await drain(login, [body, '{"user_id": "u-bad"}']);
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(-3000));
  assert.doesNotMatch(r.stdout, /ingesting by contract/);
  const rows = await fx.db.pool.query<{ user_id: string; app_version: number; masked_ip: string }>("SELECT user_id, app_version, masked_ip FROM public.user_logins");
  const expected = (await preview(login, [body]))[0]!.row as Record<string, string>;
  assert.deepEqual(rows.rows, [{ user_id: "u-login", app_version: 2003000, masked_ip: expected.masked_ip }]);
  const q = await fx.db.pool.query<{ reason: string; pseudonyms: string[] | null }>("SELECT reason, pseudonyms FROM masq.quarantine");
  assert.deepEqual(q.rows, [{ reason: "missing_field", pseudonyms: null }]);
});

test("two event types sharing a table: each row holds null in the columns of the other's fields", async () => {
  await fx.reset();
  const dir = mkdtempSync(join(tmpdir(), "masq-contract-"));
  const contract = join(dir, "shared.yaml");
  writeFileSync(
    contract,
    `version: 1
events:
  signup:
    match: { field: type, equals: signup }
    table: shared_events
    subject: user_id
    unknown: quarantine
    fields:
      type: { type: string, max_length: 16, treatment: keep, column: event_type }
      user_id: { type: string, max_length: 16, treatment: keep, column: user_id }
      email: { type: string, max_length: 64, treatment: pseudonymize, kind: email, column: masked_email }
  login:
    match: { field: type, equals: login }
    table: shared_events
    subject: user_id
    unknown: quarantine
    fields:
      type: { type: string, max_length: 16, treatment: keep, column: event_type }
      user_id: { type: string, max_length: 16, treatment: keep, column: user_id }
      ok: { type: boolean, treatment: keep, column: ok }
`,
  );
  await fx.db.pool.query("CREATE TABLE shared_events (event_type varchar(16), user_id varchar(16), masked_email text, ok boolean)");
  const committer = openRunContract(contract)!;
  const keys = await testKeys(fx.db);
  try {
    const at = new Date();
    const bodies = [JSON.stringify({ type: "signup", user_id: "u-1", email: EMAIL }), JSON.stringify({ type: "login", user_id: "u-1", ok: true })];
    const r = await committer.commit(fx.db.pool, keys, bodies.map((body, i) => ({ messageId: `shared-${i}`, body, sentAt: at, receivedAt: at })));
    assert.deepEqual(r.writtenByEvent, { signup: 1, login: 1 });
    const rows = await fx.db.pool.query("SELECT event_type, user_id, masked_email, ok FROM shared_events ORDER BY event_type");
    assert.deepEqual(rows.rows, [
      { event_type: "login", user_id: "u-1", masked_email: null, ok: true },
      { event_type: "signup", user_id: "u-1", masked_email: keys.pseudonym.pseudonymizer.pseudonymize("email", EMAIL), ok: null },
    ]);
  } finally {
    keys.close();
  }
});
