import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { sendBodies } from "../../src/ops/demo.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { REPO_ROOT, runDocCommands } from "../helpers/doc-blocks.ts";
import { MASQ_BIN, masqEnv } from "../helpers/masq-process.ts";
import { TEST_KEY } from "../helpers/pipeline.ts";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { runMasq } from "../helpers/run-masq.ts";

/**
 * `masq pseudonym <kind> -` with a contract: for every value a run stored, the pseudonym it prints is the stored
 * column's value, whatever the value's type (an email as sent, an address of a kind other than the login's ip,
 * written in any notation, an integer hashed); a kind the contract does not declare, or no registered table holds,
 * is refused in one line without the value, and without an audit record.
 */
const fx = usePipelineFixture();

const CONTRACT = `version: 1
events:
  signup:
    match: all
    table: signups
    subject: account_id
    unknown: quarantine
    fields:
      account_id: { type: string, max_length: 64, treatment: keep, column: account_id }
      email: { type: string, max_length: 320, treatment: pseudonymize, kind: email, column: masked_email }
      client_ip: { type: ip, max_length: 64, treatment: pseudonymize, kind: client_ip, column: masked_client_ip }
      referrer: { type: integer, required: false, treatment: hash, kind: referrer, column: referrer_hash }
      $sent_at: { type: timestamp, treatment: generalize, to: day, column: create_date }
`;

/** The same contract with a field of a kind (`phone`) that this database's signups table is not registered with (not migrated). */
const UNMIGRATED = CONTRACT.replace("      $sent_at:", "      phone: { type: string, max_length: 32, required: false, treatment: pseudonymize, kind: phone, column: masked_phone }\n      $sent_at:");

const SIGNUPS: { account_id: string; email: string; client_ip: string; referrer?: number }[] = [
  { account_id: "a-1", email: "Ada.Lovelace@example.com", client_ip: "2001:DB8:0:0:0:0:0:1", referrer: 1000 },
  { account_id: "a-2", email: " grace@example.com", client_ip: "198.51.100.23" },
  { account_id: "a-3", email: "ünïcödé@example.com", client_ip: "::FFFF:203.0.113.9", referrer: -7 },
  { account_id: "a-4", email: "alan@example.com", client_ip: "2001:0db8:0000:0000:0001:0000:0000:0000" },
];

test("masq pseudonym <kind> - with the contract gives exactly the values the run stored", async () => {
  const dir = mkdtempSync(join(tmpdir(), "masq-pseudonym-"));
  const contract = join(dir, "signups.yaml");
  writeFileSync(contract, CONTRACT);
  const migrated = await runMasq(["migrate", "--contract", contract], { DATABASE_URL: fx.pgdb.url });
  assert.equal(migrated.code, 0, migrated.stderr + migrated.stdout);

  const queueUrl = fx.sqs.newQueue();
  await sendBodies(fx.sqs.client, queueUrl, SIGNUPS.map((s) => JSON.stringify(s)));
  const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { MASQ_CONTRACT: contract, MASQ_WAIT_TIME_SECONDS: "1", MASQ_BATCH_WAIT_MS: "50" } });
  const run = await runMasq(["run", "--drain"], env);
  assert.equal(run.code, 0, run.stderr + run.stdout.slice(-2000));

  const { rows } = await fx.db.pool.query<{ account_id: string; masked_email: string; masked_client_ip: string; referrer_hash: string | null }>(
    "SELECT account_id, masked_email, masked_client_ip, referrer_hash FROM public.signups ORDER BY account_id",
  );
  assert.equal(rows.length, SIGNUPS.length);
  const audits = async () => (await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.unmask_audit WHERE command = 'pseudonym'")).rows[0]!.n;
  const before = await audits();
  const pseudonym = async (kind: string, value: string, extra: Record<string, string> = {}) => {
    const r = await runMasq(["pseudonym", kind, "-", "--reason", "support ticket 4711"], { ...env, ...extra }, `${value}\n`);
    assert.ok(!r.stderr.includes(value.trim()), "the value is never echoed");
    return r;
  };
  let calls = 0;
  for (const s of SIGNUPS) {
    const row = rows.find((r) => r.account_id === s.account_id)!;
    const expected: [string, string, string | null][] = [
      ["email", s.email, row.masked_email],
      ["client_ip", s.client_ip, row.masked_client_ip],
      ...(s.referrer === undefined ? [] : [["referrer", String(s.referrer), row.referrer_hash] as [string, string, string | null]]),
    ];
    for (const [kind, value, stored] of expected) {
      const r = await pseudonym(kind, value);
      calls++;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${stored}\n`, `${kind} of ${s.account_id}`);
    }
  }
  // Written another way, an address is the same address; an integer as JSON would send it, the same integer.
  assert.equal((await pseudonym("client_ip", "2001:db8::1")).stdout, `${rows[0]!.masked_client_ip}\n`);
  assert.equal((await pseudonym("referrer", "1e3")).stdout, `${rows[0]!.referrer_hash}\n`);
  calls += 2;
  assert.equal(await audits(), before + calls, "one audit record per pseudonym shown");

  // Refusals: one line, exit 2, the value never shown, nothing audited.
  const unknown = await pseudonym("ip", "198.51.100.23");
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^masq: unknown kind \(<kind>\): must be one of the kinds of .*signups\.yaml: email, client_ip, referrer /);
  assert.equal(unknown.stderr.trim().split("\n").length, 1);
  const invalid = await pseudonym("client_ip", "2001:db8::g");
  assert.equal(invalid.code, 2);
  assert.match(invalid.stderr, /\(<value>\): is not a valid IP address/);
  const notInteger = await pseudonym("referrer", "12.5");
  assert.equal(notInteger.code, 2);
  assert.match(notInteger.stderr, /is not an integer/);
  const unmigrated = join(dir, "with-calls.yaml");
  writeFileSync(unmigrated, UNMIGRATED);
  const unregistered = await pseudonym("phone", "+44 20 7946 0000", { MASQ_CONTRACT: unmigrated });
  assert.equal(unregistered.code, 2, unregistered.stderr);
  assert.match(unregistered.stderr, /kind phone of .*with-calls\.yaml is in no table registered in this database.*masq migrate --contract/);
  // The same contract's registered kinds still work.
  assert.equal((await pseudonym("email", SIGNUPS[1]!.email, { MASQ_CONTRACT: unmigrated })).stdout, `${rows[1]!.masked_email}\n`);
  calls++;
  assert.equal(await audits(), before + calls, "no audit record for a refusal");

  // Without a contract, as always: the login's two kinds only.
  const login = Object.fromEntries(Object.entries(env).filter(([k]) => k !== "MASQ_CONTRACT"));
  const noContract = await runMasq(["pseudonym", "email", "-", "--reason", "support ticket 4711"], login, `${SIGNUPS[0]!.email}\n`);
  assert.equal(noContract.code, 2);
  assert.match(noContract.stderr, /\(<kind>\): must be ip or device_id/);
});

test("docs/contracts.md's example: the pseudonym of an email under purchase.yaml, the one its table stores", async () => {
  const migrated = await runMasq(["migrate", "--contract", join(REPO_ROOT, "contracts", "examples", "purchase.yaml")], { DATABASE_URL: fx.pgdb.url });
  assert.equal(migrated.code, 0, migrated.stderr + migrated.stdout);
  const env = { ...masqEnv({ queueUrl: "", sqsEndpoint: "", databaseUrl: fx.pgdb.url }), PATH: `${dirname(MASQ_BIN)}:${dirname(process.execPath)}:${process.env.PATH ?? ""}` };
  const [r] = await runDocCommands("contracts-pseudonym", { env });
  assert.equal(r!.code, 0, r!.stderr);
  assert.equal(r!.stdout, `${createPseudonymizer(TEST_KEY).pseudonymize("email", "jane@example.com")}\n`);
});
