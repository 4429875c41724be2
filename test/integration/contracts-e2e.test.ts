import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import type { Pseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { pseudonymKeyVersion } from "../../src/keys/pseudonym-keys.ts";
import { sendBodies } from "../../src/ops/demo.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { TEST_MASTER_KEY, waitFor } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";
import { decryptVault } from "../helpers/vault-check.ts";

/**
 * Two event types end to end, through masq's own commands only: `masq migrate` makes their tables from the contract,
 * `masq run --drain` loads them from a real SQS server, and the lifecycle works on both tables and the kinds the
 * contract declares: unmask, subject export and erase across both tables, a pseudonym key rotation. A signup's
 * `user_id` is hashed, the trap for anything that would treat a contract's record by the login's allowlist.
 */
const CONTRACT = `version: 1
events:
  signup:
    match: { field: type, equals: signup }
    table: e2e_signups
    subject: account_id
    unknown: quarantine
    fields:
      type: { type: string, max_length: 16, treatment: keep, column: event_type }
      account_id: { type: string, max_length: 64, treatment: keep, column: account_id }
      user_id: { type: string, max_length: 64, treatment: hash, kind: legacy_user, column: legacy_user_hash }
      email: { type: string, max_length: 320, treatment: pseudonymize, kind: email, column: masked_email }
      ip: { type: ip, max_length: 64, treatment: pseudonymize, kind: ip, column: masked_ip }
      $sent_at: { type: timestamp, treatment: generalize, to: day, column: create_date }
  purchase:
    match: { field: type, equals: purchase }
    table: e2e_purchases
    subject: account_id
    unknown: quarantine
    fields:
      type: { type: string, max_length: 16, treatment: keep, column: event_type }
      account_id: { type: string, max_length: 64, treatment: keep, column: account_id }
      email: { type: string, max_length: 320, treatment: pseudonymize, kind: email, column: masked_email }
      card.last4: { type: string, max_length: 4, treatment: hash, kind: card_last4, column: card_last4_hash }
      amount_cents: { type: integer, treatment: generalize, bucket: 1000, column: amount_bucket }
      $sent_at: { type: timestamp, treatment: generalize, to: day, column: create_date }
`;

const signup = (account: string, email: string, ip: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ type: "signup", account_id: account, user_id: `legacy-${account}`, email, ip, ...extra });
const purchase = (account: string, email: string, last4: string, amount: number, card: Record<string, unknown> = {}) =>
  JSON.stringify({ type: "purchase", account_id: account, email, card: { last4, ...card }, amount_cents: amount });

describe("two event types under a contract, end to end", () => {
  const fx = usePipelineFixture();
  const dir = mkdtempSync(join(tmpdir(), "masq-contracts-e2e-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const contract = join(dir, "shop.yaml");
  writeFileSync(contract, CONTRACT);
  let queueUrl = "";
  const env = (extra: Record<string, string> = {}) => {
    const e = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { MASQ_CONTRACT: contract, MASQ_LOG_LEVEL: "info", MASQ_WAIT_TIME_SECONDS: "1", ...extra } });
    // masq manages the pseudonym key itself, so that `rotate pseudonym-key` may rotate it.
    delete e.MASQ_PSEUDONYM_KEY;
    return e as Record<string, string>;
  };
  const provider = () => new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY));
  const activeKey = async (): Promise<Pseudonymizer> => {
    const { rows } = await fx.db.pool.query<{ version: number }>("SELECT version FROM masq.pseudonym_keys WHERE state = 'active'");
    const p = provider();
    try {
      return (await pseudonymKeyVersion(fx.db.pool, p, rows[0]!.version)).pseudonymizer;
    } finally {
      p.close();
    }
  };
  const rows = async <T extends Record<string, unknown>>(sql: string, params: unknown[] = []) => (await fx.db.pool.query<T>(sql, params)).rows;
  const PII = ["ada@example.com", "shared@example.com", "bob@example.com", "carol@example.com", "198.51.100.7", "203.0.113.9", "legacy-ada", "legacy-bob", "4242", "hunter2"];
  const noPii = (text: string) => {
    for (const v of PII) assert.ok(!text.includes(v), `no ${v} in masq's output`);
  };
  let p: Pseudonymizer;

  test("masq migrate makes both tables; masq run --drain loads both event types and quarantines the rest", async () => {
    await fx.reset();
    const migrate = await runMasq(["migrate"], env());
    assert.equal(migrate.code, 0, migrate.stderr);
    const columns = await rows<{ t: string; c: string }>(
      "SELECT table_name AS t, string_agg(column_name, ',' ORDER BY ordinal_position) AS c FROM information_schema.columns WHERE table_name LIKE 'e2e_%' GROUP BY 1 ORDER BY 1",
    );
    assert.deepEqual(columns, [
      { t: "e2e_purchases", c: "event_type,account_id,masked_email,card_last4_hash,amount_bucket,create_date" },
      { t: "e2e_signups", c: "event_type,account_id,legacy_user_hash,masked_email,masked_ip,create_date" },
    ]);

    queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, [
      signup("ada", "ada@example.com", "198.51.100.7"),
      signup("bob", "bob@example.com", "203.0.113.9"),
      purchase("ada", "ada@example.com", "4242", 1999),
      purchase("ada", "shared@example.com", "4242", 500),
      purchase("bob", "shared@example.com", "1111", 12_345),
      // Refused: a nested field nobody classified, a top-level one, an event no type recognises.
      purchase("ada", "ada@example.com", "4242", 700, { cvc: "123" }),
      signup("ada", "ada@example.com", "198.51.100.7", { password: "hunter2" }),
      JSON.stringify({ type: "refund", account_id: "ada", email: "ada@example.com" }),
    ]);
    const run = await runMasq(["run", "--drain"], env());
    assert.equal(run.code, 0, run.stderr);
    noPii(run.stdout + run.stderr);
    p = await activeKey();

    const signups = await rows("SELECT account_id, legacy_user_hash, masked_email, masked_ip FROM public.e2e_signups ORDER BY account_id");
    assert.deepEqual(signups, [
      { account_id: "ada", legacy_user_hash: p.pseudonymize("legacy_user", "legacy-ada"), masked_email: p.pseudonymize("email", "ada@example.com"), masked_ip: p.pseudonymize("ip", "198.51.100.7") },
      { account_id: "bob", legacy_user_hash: p.pseudonymize("legacy_user", "legacy-bob"), masked_email: p.pseudonymize("email", "bob@example.com"), masked_ip: p.pseudonymize("ip", "203.0.113.9") },
    ]);
    const purchases = await rows("SELECT account_id, masked_email, card_last4_hash, amount_bucket::int AS amount_bucket FROM public.e2e_purchases ORDER BY account_id, amount_bucket");
    assert.deepEqual(purchases, [
      { account_id: "ada", masked_email: p.pseudonymize("email", "shared@example.com"), card_last4_hash: p.pseudonymize("card_last4", "4242"), amount_bucket: 0 },
      { account_id: "ada", masked_email: p.pseudonymize("email", "ada@example.com"), card_last4_hash: p.pseudonymize("card_last4", "4242"), amount_bucket: 1000 },
      { account_id: "bob", masked_email: p.pseudonymize("email", "shared@example.com"), card_last4_hash: p.pseudonymize("card_last4", "1111"), amount_bucket: 12_000 },
    ]);
    // One kind, one pseudonym: ada's email joins her signup and her purchase.
    assert.equal(signups[0]!.masked_email, purchases[1]!.masked_email);

    const q = await rows<{ reason: string; detail: string; user_id: string | null; body: string | null }>("SELECT reason, detail, user_id, body FROM masq.quarantine ORDER BY reason, detail");
    assert.deepEqual(
      q.map((r) => [r.reason, r.detail, r.user_id]),
      [
        ["unclassified_field", "field card.cvc", "ada"],
        ["unclassified_field", "field password", "ada"],
        ["unknown_event", "field type", null],
      ],
    );
    for (const r of q) noPii(r.body ?? "");
    // The vault: the originals of the pseudonymised kinds only (never a hashed one), each once.
    const vault = new Map<string, Set<string>>();
    const key = provider();
    try {
      for (const v of await decryptVault(fx.db.pool, key)) vault.set(v.kind, (vault.get(v.kind) ?? new Set()).add(v.value));
    } finally {
      key.close();
    }
    assert.deepEqual([...vault.keys()].sort(), ["email", "ip"]);
    assert.deepEqual([...vault.get("email")!].sort(), ["ada@example.com", "bob@example.com", "shared@example.com"]);

    // masq status: each event type's table and its rows, the vault's values by kind, the quarantine by reason.
    const status = await runMasq(["status"], env());
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /public\.e2e_signups\s+2 rows\n/);
    assert.match(status.stdout, /public\.e2e_purchases\s+3 rows\n/);
    // The signups' ip is of kind ip, as the login's: one domain, counted as ips.
    assert.match(status.stdout, /\(2 ips, 0 device ids, 3 email\)/);
    assert.match(status.stdout, /unclassified_field\s+2 /);
    assert.match(status.stdout, /unknown_event\s+1 /);
  });

  test("unmask --kind email recovers ada's email, audited", async () => {
    const pseudonym = p.pseudonymize("email", "ada@example.com");
    const r = await runMasq(["unmask", "--kind", "email", "--pseudonym", pseudonym, "--reason", "support case 7", "--format", "json"], env());
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), [{ kind: "email", pseudonym, value: "ada@example.com" }]);
    const audit = await rows<{ subjects: string[] }>("SELECT subjects FROM masq.audit WHERE action = 'unmask' ORDER BY seq DESC LIMIT 1");
    assert.deepEqual(audit[0]!.subjects, [`email:${pseudonym}`]);
  });

  test("subject export gives ada's rows of both tables with their originals, and her refused events", async () => {
    const r = await runMasq(["subject", "export", "--user-id", "ada", "--reason", "access request 7", "--format", "json"], env());
    assert.equal(r.code, 0, r.stderr);
    const lines = JSON.parse(r.stdout) as { source: string; table?: string; values?: Record<string, string | null>; message_id?: string }[];
    const contractRows = lines.filter((l) => l.source === "contract_row");
    assert.deepEqual(contractRows.map((l) => [l.table, l.values]).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))), [
      ["public.e2e_purchases", { masked_email: "ada@example.com" }],
      ["public.e2e_purchases", { masked_email: "shared@example.com" }],
      ["public.e2e_signups", { masked_email: "ada@example.com", masked_ip: "198.51.100.7" }],
    ]);
    assert.equal(lines.filter((l) => l.source === "quarantined").length, 2, "her two refused events (the unknown one names nobody)");
  });

  test("a pseudonym key rotation rewrites both tables and the refused events' copies, and keeps the hashed user_id out of them", async () => {
    const r = await runMasq(["rotate", "pseudonym-key"], env({ MASQ_LOG_LEVEL: "warn" }));
    assert.equal(r.code, 0, r.stderr);
    const old = p;
    p = await activeKey();
    const signups = await rows<{ masked_email: string; legacy_user_hash: string }>("SELECT masked_email, legacy_user_hash FROM public.e2e_signups WHERE account_id = 'ada'");
    assert.deepEqual(signups, [{ masked_email: p.pseudonymize("email", "ada@example.com"), legacy_user_hash: old.pseudonymize("legacy_user", "legacy-ada") }], "a hashed column has no original: it stays");
    const purchases = await rows<{ masked_email: string }>("SELECT masked_email FROM public.e2e_purchases WHERE account_id = 'bob'");
    assert.deepEqual(purchases, [{ masked_email: p.pseudonymize("email", "shared@example.com") }]);
    const copies = await rows<{ body: string; pseudonyms: string[] }>("SELECT body, pseudonyms FROM masq.quarantine WHERE user_id = 'ada' ORDER BY detail");
    for (const c of copies) {
      noPii(c.body);
      assert.ok(c.body.includes(`hmac:${p.pseudonymize("email", "ada@example.com")}`), `the copy shows the email's new pseudonym: ${c.body}`);
      assert.ok(c.pseudonyms.includes(`email:${p.pseudonymize("email", "ada@example.com")}`));
    }
  });

  test("subject erase removes ada from both tables and the quarantine, and only the values nobody else uses", async () => {
    const r = await runMasq(["subject", "erase", "--user-id", "ada", "--reason", "erasure request 7"], env());
    assert.equal(r.code, 0, r.stderr);
    noPii(r.stdout + r.stderr);
    const left = await rows<{ n: number }>(
      "SELECT (SELECT count(*) FROM public.e2e_signups WHERE account_id = 'ada') + (SELECT count(*) FROM public.e2e_purchases WHERE account_id = 'ada') + (SELECT count(*) FROM masq.quarantine WHERE user_id = 'ada') AS n",
    );
    assert.equal(Number(left[0]!.n), 0);
    const key = provider();
    let values: string[];
    try {
      values = (await decryptVault(fx.db.pool, key)).map((v) => v.value).sort();
    } finally {
      key.close();
    }
    assert.deepEqual(values, ["203.0.113.9", "bob@example.com", "shared@example.com"], "bob's values stay, the shared email with them");
    assert.equal((await rows("SELECT 1 FROM public.e2e_purchases WHERE account_id = 'bob'")).length, 1);
  });

  test("masq run with MASQ_VAULT_RETENTION_DAYS prunes what only rows older than the period used, across the contract's tables", async () => {
    queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, [purchase("carol", "carol@example.com", "9999", 100)]);
    const drained = await runMasq(["run", "--drain"], env());
    assert.equal(drained.code, 0, drained.stderr);
    // Carol's purchase is 100 days old: her email is used by nothing of the last 30 days.
    await fx.db.pool.query("UPDATE public.e2e_purchases SET create_date = current_date - 100 WHERE account_id = 'carol'");
    const proc = spawnMasq(["run"], env({ MASQ_VAULT_RETENTION_DAYS: "30" }));
    try {
      await waitFor(() => proc.lines.some((l) => l.includes("vault prune:")), 60_000, "the prune log line");
    } finally {
      proc.child.kill("SIGTERM");
      await proc.exited;
    }
    noPii(proc.lines.join("\n"));
    const key = provider();
    let values: string[];
    try {
      values = (await decryptVault(fx.db.pool, key)).map((v) => v.value).sort();
    } finally {
      key.close();
    }
    assert.deepEqual(values, ["203.0.113.9", "bob@example.com", "shared@example.com"], "carol's email went; bob's recent signup and purchase keep theirs");
  });
});
