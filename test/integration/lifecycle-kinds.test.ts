import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { commitMessages } from "../../src/ingest/commit-batch.ts";
import type { Pseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { seal, vaultAad } from "../../src/keys/data-keys.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { pseudonymKeyVersion } from "../../src/keys/pseudonym-keys.ts";
import { rotatePseudonymKey } from "../../src/lifecycle/rotate-pseudonym-key.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { TABLE, TEST_MASTER_KEY, TEST_MASTER_KEY_HEX, testKeys } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";

const DAY = 86_400_000;
const login = (user: string, ip: string, device: string) => JSON.stringify({ user_id: user, app_version: "2.3.0", device_type: "ios", ip, locale: "en", device_id: device });

/**
 * The lifecycle per kind and per registered table (106_contract_tables.sql): a second table, registered as a contract
 * registers one (its own subject column, a pseudonymized column of kind email and a hashed one of kind card), is
 * exported, erased, pruned and rotated with the login table, and the quarantine's pseudonyms array with them.
 */
describe("the lifecycle over a contract's table and kinds", () => {
  const fx = usePipelineFixture();
  const env = (extra: Record<string, string> = {}) => ({ DATABASE_URL: fx.pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_LOG_LEVEL: "silent", ...extra });
  const provider = () => new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY));
  let p: Pseudonymizer;
  const count = async (sql: string, params: unknown[] = []) => Number((await fx.db.pool.query<{ n: string }>(sql, params)).rows[0]!.n);
  const vaulted = (kind: string, value: string) => count("SELECT count(*) AS n FROM masq.vault WHERE kind = $1 AND pseudonym = $2", [kind, p.pseudonymize(kind, value)]).then((n) => n === 1);
  const quarantineBody = (pseudonym: string) => JSON.stringify({ email: `hmac:${pseudonym}` });

  test("set-up: a second registered table, rows of two subjects in both tables, vault values of three kinds, a quarantined purchase", async () => {
    await fx.reset();
    const keys = await testKeys(fx.db, { pseudonymKey: null });
    try {
      p = keys.pseudonym.pseudonymizer;
      const now = new Date();
      await commitMessages(fx.db.pool, TABLE, keys, [
        { messageId: "l-1", body: login("cust-1", "198.51.100.70", "dev-cust-1"), sentAt: now, receivedAt: now },
        { messageId: "l-2", body: login("cust-2", "198.51.100.71", "dev-cust-2"), sentAt: now, receivedAt: now },
      ]);
      await fx.db.pool.query("CREATE TABLE public.purchases (customer_id text, masked_email text, card_hash text, amount integer, create_date date)");
      await fx.db.pool.query("INSERT INTO masq.target_tables (relation, subject_column) VALUES ('public.purchases', 'customer_id')");
      await fx.db.pool.query(
        "INSERT INTO masq.target_pseudonym_columns VALUES ('public.purchases', 'masked_email', 'email', true), ('public.purchases', 'card_hash', 'card', false)",
      );
      const e = (v: string) => p.pseudonymize("email", v);
      const card = (v: string) => p.pseudonymize("card", v);
      const old = new Date(Date.now() - 100 * DAY).toISOString().slice(0, 10);
      await fx.db.pool.query(
        `INSERT INTO public.purchases VALUES ($1, $2, $3, 1999, current_date), ($1, $4, $3, 500, current_date),
                                             ('cust-2', $4, $5, 700, current_date), ('cust-2', $6, $5, 300, $7::date)`,
        ["cust-1", e("alice@example.com"), card("4242"), e("shared@example.com"), card("1111"), e("old@example.com"), old],
      );
      // The email values in the vault, sealed as ingestion seals them.
      const emails = ["alice@example.com", "shared@example.com", "old@example.com", "quarantined@example.com", "rejected@example.com"];
      const dk = await keys.dataKeys.reserve(emails.length);
      const sealed = emails.map((v) => seal(dk.keyObject, Buffer.from(v), vaultAad("email", e(v))));
      await fx.db.pool.query("SELECT masq.add_vault_values($1, $2, $3, $4, $5, $6)", [
        keys.pseudonym.version,
        emails.map(() => "email"),
        emails.map(e),
        emails.map(() => dk.id),
        sealed.map((s) => s.nonce),
        sealed.map((s) => s.ciphertext),
      ]);
      // A quarantined purchase of each customer: their subject in user_id, their pseudonyms in pseudonyms.
      const quarantine = (id: string, reason: string, user: string, pseudonyms: string[], body: string) =>
        fx.db.pool.query(
          `INSERT INTO masq.quarantine (message_id, reason, detail, body, body_length, received_at, user_id, pseudonyms)
           VALUES ($1, $2, 'amount: not an integer', $3, 60, now(), $4, $5)`,
          [id, reason, body, user, pseudonyms],
        );
      await quarantine("q-1", "invalid_field", "cust-1", [`email:${e("quarantined@example.com")}`], quarantineBody(e("quarantined@example.com")));
      await quarantine("q-2", "invalid_field", "cust-2", [`email:${e("shared@example.com")}`, `card:${card("1111")}`], quarantineBody(e("shared@example.com")));
      // A row the table refused: no original kept, its values are the vault's.
      const refused = JSON.stringify({ customer_id: "cust-1", masked_email: e("rejected@example.com"), amount: -1 });
      await quarantine("q-3", "db_rejected", "cust-1", [`email:${e("rejected@example.com")}`], refused);
    } finally {
      keys.close();
    }
    assert.ok(await vaulted("email", "alice@example.com"));
    assert.ok(await vaulted("ip", "198.51.100.70"));
    const status = await runMasq(["status"], env());
    assert.match(status.stdout, /vault {8}9 distinct values \(2 ips, 2 device ids, 5 email\)/, status.stdout + status.stderr);
  });

  test("subject export shows the subject's rows of both tables and reveals the email", async () => {
    const r = await runMasq(["subject", "export", "--user-id", "cust-1", "--reason", "access request DSR-21", "--format", "json"], env());
    assert.equal(r.code, 0, r.stderr);
    const lines = JSON.parse(r.stdout) as Record<string, unknown>[];
    const logins = lines.filter((l) => l.source === "row");
    assert.deepEqual(
      logins.map((l) => [l.user_id, l.ip, l.device_id]),
      [["cust-1", "198.51.100.70", "dev-cust-1"]],
    );
    const purchases = lines.filter((l) => l.source === "contract_row") as { table: string; user_id: string; columns: Record<string, unknown>; values: Record<string, string | null> }[];
    assert.deepEqual(purchases.map((l) => [l.table, l.user_id, l.columns.amount, l.values.masked_email]).sort(), [
      ["public.purchases", "cust-1", 1999, "alice@example.com"],
      ["public.purchases", "cust-1", 500, "shared@example.com"],
    ]);
    assert.ok(purchases.every((l) => !Object.hasOwn(l.values, "card_hash")), "a hash column has no original");
    const quarantined = lines.filter((l) => l.source === "quarantined") as { message_id: string; values?: { kind: string; value: string }[]; row?: Record<string, unknown> }[];
    assert.deepEqual(quarantined.map((l) => l.message_id).sort(), ["q-1", "q-3"], "the subject's quarantined purchases, once");
    const refused = quarantined.find((l) => l.message_id === "q-3")!;
    assert.deepEqual(
      refused.values?.map((v) => [v.kind, v.value]),
      [["email", "rejected@example.com"]],
      "the refused row's email, from the vault",
    );
    assert.equal(refused.row?.amount, -1);
    const recorded = await fx.db.pool.query<{ selector: { table: string; rows: number; values: number } }>(
      "SELECT selector FROM masq.audit WHERE action = 'subject-export' AND selector ->> 'table' = 'public.purchases'",
    );
    assert.deepEqual(
      recorded.rows.map((x) => [x.selector.rows, x.selector.values]),
      [[2, 3]],
      "the audit row counts the purchases rows and their email values, and the refused row's",
    );
  });

  test("the CSV and the table show a contract table's row with its values", async () => {
    const csv = await runMasq(["subject", "export", "--user-id", "cust-1", "--table", "purchases", "--reason", "access request DSR-21", "--format", "csv"], env());
    assert.equal(csv.code, 0, csv.stderr);
    assert.equal(csv.stdout.split("\r\n").filter((l) => l.startsWith("contract_row,cust-1,")).length, 2, csv.stdout);
    assert.match(csv.stdout, /alice@example\.com/);
    const table = await runMasq(["subject", "export", "--user-id", "cust-1", "--table", "purchases", "--reason", "access request DSR-21"], env());
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`masked_email=${p.pseudonymize("email", "alice@example.com")} \\(alice@example\\.com\\)`));
    assert.match(table.stdout, /no original kept; the row the table refused, with its values: .*rejected@example\.com/);
  });

  test("unmask --kind email reveals an email value and is audited", async () => {
    const pseudonym = p.pseudonymize("email", "alice@example.com");
    const r = await runMasq(["unmask", "--kind", "email", "--pseudonym", pseudonym, "--reason", "fraud case 21", "--format", "json"], env());
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), [{ kind: "email", pseudonym, value: "alice@example.com" }]);
    const audit = await fx.db.pool.query<{ subjects: string[] }>("SELECT subjects FROM masq.audit WHERE action = 'unmask' ORDER BY seq DESC LIMIT 1");
    assert.deepEqual(audit.rows[0]!.subjects, [`email:${pseudonym}`]);
    // By the rows of the table: its subject column, its email column (the table's kinds when --kind names none).
    for (const kind of [["--kind", "email"], []]) {
      const byRows = await runMasq(["unmask", "--table", "purchases", "--user-id", "cust-1", ...kind, "--reason", "fraud case 21", "--format", "json"], env());
      assert.equal(byRows.code, 0, byRows.stderr);
      assert.deepEqual((JSON.parse(byRows.stdout) as { value: string }[]).map((v) => v.value).sort(), ["alice@example.com", "shared@example.com"]);
    }
    const bad = await runMasq(["unmask", "--kind", "Email!", "--pseudonym", pseudonym, "--reason", "fraud case 21"], env());
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /--kind/);
  });

  test("vault prune keeps the values the purchases and the quarantine use, and takes what only an old purchase used", async () => {
    const r = await runMasq(["vault", "prune"], env({ MASQ_VAULT_RETENTION_DAYS: "30" }));
    assert.equal(r.code, 0, r.stderr);
    for (const v of ["alice@example.com", "shared@example.com", "quarantined@example.com", "rejected@example.com"]) assert.ok(await vaulted("email", v), `${v} stays`);
    assert.ok(!(await vaulted("email", "old@example.com")), "the value only a purchase older than the period used goes");
    assert.ok(await vaulted("ip", "198.51.100.70"), "the login's values stay");
  });

  test("subject erase removes the subject's rows of both tables, their quarantined purchase and exactly the values only they used", async () => {
    const dry = await runMasq(["subject", "erase", "--user-id", "cust-1", "--table", "purchases", "--dry-run"], env());
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /rows\s+2\n/, dry.stdout);
    const r = await runMasq(["subject", "erase", "--user-id", "cust-1", "--reason", "erasure request DSR-21"], env());
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await count("SELECT count(*) AS n FROM public.purchases WHERE customer_id = 'cust-1'"), 0);
    assert.equal(await count("SELECT count(*) AS n FROM public.user_logins WHERE user_id = 'cust-1'"), 0);
    assert.equal(await count("SELECT count(*) AS n FROM masq.quarantine WHERE user_id = 'cust-1'"), 0);
    for (const [kind, v] of [["email", "alice@example.com"], ["email", "quarantined@example.com"], ["email", "rejected@example.com"], ["ip", "198.51.100.70"], ["device_id", "dev-cust-1"]] as const) {
      assert.ok(!(await vaulted(kind, v)), `${kind} ${v}, only cust-1's, is erased`);
    }
    assert.ok(await vaulted("email", "shared@example.com"), "an email cust-2 also uses stays");
    assert.ok(await vaulted("ip", "198.51.100.71"), "cust-2's login values stay");
    assert.equal(await count("SELECT count(*) AS n FROM public.purchases WHERE customer_id = 'cust-2'"), 2);
  });

  test("a pseudonym key rotation rewrites purchases.masked_email and the quarantine's pseudonyms, and leaves the hash column", async () => {
    const before = await fx.db.pool.query<{ card_hash: string }>("SELECT card_hash FROM public.purchases WHERE customer_id = 'cust-2' ORDER BY amount");
    const r = await rotatePseudonymKey({ pool: fx.db.pool, provider: provider(), table: TABLE, batchSize: 100, resume: false });
    assert.equal(r.outcome, "finished");
    const active = await fx.db.pool.query<{ version: number }>("SELECT version FROM masq.pseudonym_keys WHERE state = 'active'");
    const next = (await pseudonymKeyVersion(fx.db.pool, provider(), active.rows[0]!.version)).pseudonymizer;
    const oldCard = p.pseudonymize("card", "1111");
    const rows = await fx.db.pool.query<{ masked_email: string; card_hash: string }>(
      "SELECT masked_email, card_hash FROM public.purchases WHERE customer_id = 'cust-2' AND create_date = current_date",
    );
    assert.deepEqual(rows.rows, [{ masked_email: next.pseudonymize("email", "shared@example.com"), card_hash: oldCard }]);
    const after = await fx.db.pool.query<{ card_hash: string }>("SELECT card_hash FROM public.purchases WHERE customer_id = 'cust-2' ORDER BY amount");
    assert.deepEqual(after.rows, before.rows, "a hash column has no original to pseudonymize again: it stays");
    const q = await fx.db.pool.query<{ pseudonyms: string[]; body: string }>("SELECT pseudonyms, body FROM masq.quarantine WHERE message_id = 'q-2'");
    assert.deepEqual(q.rows[0]!.pseudonyms, [`email:${next.pseudonymize("email", "shared@example.com")}`, `card:${oldCard}`]);
    assert.equal(q.rows[0]!.body, quarantineBody(next.pseudonymize("email", "shared@example.com")));
    assert.ok(await count("SELECT count(*) AS n FROM masq.vault WHERE kind = 'email' AND pseudonym = $1", [next.pseudonymize("email", "shared@example.com")]).then((n) => n === 1));
  });
});
