import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, describe, test } from "node:test";
import { sendBodies } from "../../src/ops/demo.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { runDocCommands } from "../helpers/doc-blocks.ts";
import { MASQ_BIN, masqEnv } from "../helpers/masq-process.ts";
import { TEST_KEY } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";

/**
 * `masq quarantine replay` with a contract: a contract's records go through the contract's compiled path (the same
 * rows, pseudonyms and vault values `masq run` gives) into their event type's table; a login record never goes
 * through a contract, nor a contract's record through the login parser. Real Postgres, a real SQS-compatible server.
 */
const V1 = `version: 1
events:
  signup:
    match: { field: type, equals: signup }
    table: rc_signups
    subject: account_id
    unknown: quarantine
    fields:
      type: { type: string, max_length: 16, treatment: keep, column: event_type }
      account_id: { type: string, max_length: 64, treatment: keep, column: account_id }
      email: { type: string, max_length: 320, treatment: pseudonymize, kind: email, column: masked_email }
      ip: { type: ip, max_length: 64, treatment: generalize, column: ip_network }
      $sent_at: { type: timestamp, treatment: generalize, to: day, column: create_date }
  purchase:
    match: { field: type, equals: purchase }
    table: rc_purchases
    subject: account_id
    unknown: quarantine
    fields:
      type: { type: string, max_length: 16, treatment: keep, column: event_type }
      account_id: { type: string, max_length: 64, treatment: keep, column: account_id }
      email: { type: string, max_length: 320, treatment: pseudonymize, kind: email, column: masked_email }
      card.last4: { type: string, max_length: 4, treatment: hash, kind: card_last4, column: card_last4_hash }
      amount_cents: { type: integer, treatment: keep, column: amount_cents }
      $sent_at: { type: timestamp, treatment: generalize, to: day, column: create_date }
`;
/** V1, and a signup's referrer is now classified (dropped): what V1 refused as unclassified_field, V2 accepts. */
const V2 = V1.replace(
  "      ip: { type: ip, max_length: 64, treatment: generalize, column: ip_network }\n",
  "      ip: { type: ip, max_length: 64, treatment: generalize, column: ip_network }\n      referrer: { type: string, max_length: 64, treatment: drop }\n",
);

/** A second contract, of another deployment sharing the database: its one event type takes every event. */
const OTHER = `version: 1
events:
  note:
    match: all
    table: rc_notes
    subject: account_id
    unknown: quarantine
    fields:
      account_id: { type: string, max_length: 64, treatment: keep, column: account_id }
      email: { type: string, max_length: 320, treatment: pseudonymize, kind: email, column: masked_email }
`;

const KEY_HEX = Buffer.from(TEST_KEY).toString("hex");
const PII = ["late@example.com", "pw@example.com", "big@example.com", "198.51.100.23", "hunter2", "4242", "note@example.com"];

describe("quarantine replay with a contract", () => {
  const fx = usePipelineFixture();
  const dir = mkdtempSync(join(tmpdir(), "masq-contract-replay-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  // `masq` in docs/contracts.md's block is this checkout's bin/masq.
  const binDir = join(dir, "bin");
  mkdirSync(binDir);
  symlinkSync(MASQ_BIN, join(binDir, "masq"));
  const v1 = join(dir, "v1.yaml");
  const v2 = join(dir, "v2.yaml");
  writeFileSync(v1, V1);
  writeFileSync(v2, V2);
  const other = join(dir, "other.yaml");
  writeFileSync(other, OTHER);
  const env = (extra: Record<string, string> = {}) =>
    masqEnv({ queueUrl: fx.sqs.newQueue(), sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { MASQ_WAIT_TIME_SECONDS: "1", MASQ_LOG_LEVEL: "warn", ...extra } }) as Record<
      string,
      string
    >;
  const rows = async <T extends Record<string, unknown>>(sql: string, params: unknown[] = []) => (await fx.db.pool.query<T>(sql, params)).rows;
  const noPii = (text: string) => {
    for (const v of PII) assert.ok(!text.includes(v), `no ${v} in masq's output: ${text}`);
  };
  const pending = async () => (await rows<{ reason: string; contract: boolean }>("SELECT reason, pseudonyms IS NOT NULL AS contract FROM masq.quarantine WHERE replayed_at IS NULL ORDER BY reason")).map((r) => `${r.reason}${r.contract ? "" : " (login)"}`);
  const late = JSON.stringify({ type: "signup", account_id: "late", email: "late@example.com", ip: "198.51.100.23", referrer: "newsletter" });
  const withPassword = { type: "purchase", account_id: "pw", email: "pw@example.com", card: { last4: "4242" }, amount_cents: 500 };

  test("without --contract, a contract's records are left alone and counted; the login's are replayed as before", async () => {
    await fx.reset();
    assert.equal((await runMasq(["migrate", "--contract", v1], { DATABASE_URL: fx.pgdb.url })).code, 0);
    await fx.db.pool.query("ALTER TABLE public.rc_purchases ADD CONSTRAINT rc_small CHECK (amount_cents < 100000)");
    const contractRun = env({ MASQ_CONTRACT: v1 });
    await sendBodies(fx.sqs.client, contractRun.QUEUE_URL!, [
      // Refused by V1 (unclassified_field), accepted by V2.
      late,
      // Refused by both (unclassified_field).
      JSON.stringify({ ...withPassword, password: "hunter2" }),
      // Refused by the table (db_rejected): its record keeps the masked row, not the original.
      JSON.stringify({ type: "purchase", account_id: "big", email: "big@example.com", card: { last4: "1111" }, amount_cents: 500_000 }),
    ]);
    const drained = await runMasq(["run", "--drain"], contractRun);
    assert.equal(drained.code, 0, drained.stderr);
    const loginRun = env();
    await sendBodies(fx.sqs.client, loginRun.QUEUE_URL!, [JSON.stringify({ user_id: "u-bad" })]);
    assert.equal((await runMasq(["run", "--drain"], loginRun)).code, 0);
    assert.deepEqual(await pending(), ["db_rejected", "missing_field (login)", "unclassified_field", "unclassified_field"]);

    const r = await runMasq(["quarantine", "replay", "--all"], env());
    assert.equal(r.code, 1, r.stderr + r.stdout);
    noPii(r.stdout + r.stderr);
    assert.equal(
      r.stdout,
      "replayed 0, already replayed or gone 0, refused by the table 0, still rejected by masq (left quarantined): missing_field 1\n" +
        "left quarantined: 3 record(s) of a privacy contract, which the login path does not replay: replay them with --contract <file>\n",
    );
    assert.equal(r.stderr, "");
    assert.deepEqual(await pending(), ["db_rejected", "missing_field (login)", "unclassified_field", "unclassified_field"]);
    assert.deepEqual(await rows("SELECT count(*)::int AS n FROM public.user_logins"), [{ n: 0 }], "no contract record in the login table");
  });

  test("with --contract (docs/contracts.md's commands): what the contract now accepts loads as run would load it; the rest stays, each by its reason", async () => {
    const [password] = await rows<{ message_id: string }>("SELECT message_id FROM masq.quarantine WHERE user_id = 'pw'");
    const fixed = join(dir, "fixed.json");
    writeFileSync(fixed, JSON.stringify(withPassword));
    const [dry, all, corrected] = await runDocCommands("contracts-replay", {
      env: { ...env(), PATH: `${binDir}:${dirname(process.execPath)}:${process.env.PATH ?? ""}` },
      values: { "shop.yaml": v2, "<message-id>": password!.message_id, "fixed.json": fixed },
    });
    assert.equal(dry!.code, 0, dry!.stderr);
    assert.match(dry!.stdout, /^would replay 1 record\(s\); still rejected: unclassified_field 1\n/);

    assert.equal(all!.code, 1, all!.stderr + all!.stdout);
    noPii(all!.stdout + all!.stderr);
    assert.equal(
      all!.stdout,
      "replayed 1, already replayed or gone 0, refused by the table 0, still rejected by masq (left quarantined): unclassified_field 1\n" +
        "left quarantined: 1 login record(s), which a contract does not replay: replay them without --contract or MASQ_CONTRACT\n",
    );
    assert.match(all!.stderr, /^masq: 1 record\(s\) refused by a contract's table keep the masked row, not the original body: replay one with a corrected body: masq quarantine replay --id <message_id> --body-file <file> --contract <file>\n$/);

    // The replayed signup, in the signups' table, with the pseudonym and generalisation `masq run` (here: preview,
    // with the same key and sent time) gives the same body under V2.
    const [record] = await rows<{ message_id: string; sent_at: Date }>("SELECT message_id, sent_at FROM masq.quarantine WHERE replayed_at IS NOT NULL AND user_id = 'late'");
    const preview = await runMasq(["preview", "--contract", v2, "--sent-at", record!.sent_at.toISOString()], { MASQ_PSEUDONYM_KEY: KEY_HEX }, `${late}\n`);
    const expected = JSON.parse(preview.stdout) as { table: string; row: Record<string, unknown> };
    assert.equal(expected.table, "rc_signups");
    assert.deepEqual(await rows("SELECT event_type, account_id, masked_email, ip_network, create_date::text AS create_date FROM public.rc_signups"), [expected.row]);
    assert.deepEqual(await rows("SELECT outcome FROM masq.ingest_ledger WHERE message_id = $1", [record!.message_id]), [{ outcome: "written" }]);

    // Its email's original is in the vault, and unmask recovers it.
    const pseudonym = expected.row.masked_email as string;
    const unmask = await runMasq(["unmask", "--kind", "email", "--pseudonym", pseudonym, "--reason", "replay test", "--format", "json"], env());
    assert.equal(unmask.code, 0, unmask.stderr);
    assert.deepEqual(JSON.parse(unmask.stdout), [{ kind: "email", pseudonym, value: "late@example.com" }]);

    // The purchase the contract still refused, with a corrected body: prepared by the contract too, and audited.
    assert.equal(corrected!.code, 0, corrected!.stderr + corrected!.stdout);
    noPii(corrected!.stdout + corrected!.stderr);
    assert.match(corrected!.stdout, /^replayed 1\b/);
    const p = await runMasq(["preview", "--contract", v2], { MASQ_PSEUDONYM_KEY: KEY_HEX }, `${JSON.stringify(withPassword)}\n`);
    const purchase = (JSON.parse(p.stdout) as { row: Record<string, unknown> }).row;
    assert.deepEqual(await rows("SELECT account_id, masked_email, card_last4_hash, amount_cents::int AS amount_cents FROM public.rc_purchases"), [
      { account_id: "pw", masked_email: purchase.masked_email, card_last4_hash: purchase.card_last4_hash, amount_cents: 500 },
    ]);
    const audited = await rows<{ reason: string }>("SELECT reason FROM masq.audit WHERE action = 'replay' ORDER BY seq DESC LIMIT 1");
    assert.equal(audited[0]?.reason, "ticket OPS-12: card data fixed");
    assert.deepEqual(await pending(), ["db_rejected", "missing_field (login)"]);

    // A second replay loads nothing again.
    const again = await runMasq(["quarantine", "replay", "--all", "--contract", v2], env());
    assert.match(again.stdout, /^replayed 0, already replayed or gone 0, refused by the table 0\n/);
    assert.deepEqual(await rows("SELECT (SELECT count(*)::int FROM public.rc_signups) AS s, (SELECT count(*)::int FROM public.rc_purchases) AS p"), [{ s: 1, p: 1 }]);
  });

  test("with another contract's tables registered too, --all and --reason-code refuse (exit 2) and replay nothing; --id still replays", async () => {
    await fx.reset();
    // Two deployments, two contracts, one database; and a login table other than MASQ_TABLE's, which is no contract's.
    for (const args of [["migrate", "--contract", v1], ["migrate", "--contract", other]]) assert.equal((await runMasq(args, { DATABASE_URL: fx.pgdb.url })).code, 0);
    assert.equal((await runMasq(["migrate"], { DATABASE_URL: fx.pgdb.url, MASQ_TABLE: "rc_logins" })).code, 0);
    await fx.db.pool.query("TRUNCATE public.rc_signups, public.rc_purchases");
    const firstRun = env({ MASQ_CONTRACT: v1 });
    await sendBodies(fx.sqs.client, firstRun.QUEUE_URL!, [late]);
    assert.equal((await runMasq(["run", "--drain"], firstRun)).code, 0);
    const otherRun = env({ MASQ_CONTRACT: other });
    await sendBodies(fx.sqs.client, otherRun.QUEUE_URL!, [JSON.stringify({ account_id: "note", email: "note@example.com", mood: "fine" })]);
    assert.equal((await runMasq(["run", "--drain"], otherRun)).code, 0);
    const [mine] = await rows<{ message_id: string }>("SELECT message_id FROM masq.quarantine WHERE user_id = 'late'");
    assert.deepEqual(await pending(), ["unclassified_field", "unclassified_field"]);
    const reveals = async () => (await rows<{ n: number }>("SELECT count(*)::int AS n FROM masq.audit WHERE action = 'replay'"))[0]!.n;
    const revealedBefore = await reveals();

    for (const [selector, flag] of [[["--all"], "--all"], [["--all", "--dry-run"], "--all"], [["--reason-code", "unclassified_field"], "--reason-code"]] as const) {
      const r = await runMasq(["quarantine", "replay", ...selector, "--contract", v2], env());
      assert.equal(r.code, 2, r.stderr + r.stdout);
      assert.equal(r.stdout, "");
      assert.equal(
        r.stderr,
        `masq: cannot tell this contract's quarantined records from another contract's (${flag}): the database also has table(s) public.rc_notes, ` +
          "which this contract does not write, and a record does not say which contract refused it; replay the records you have checked are this contract's by --id <message_id>\n",
      );
    }
    assert.deepEqual(await rows("SELECT count(*)::int AS n FROM masq.quarantine WHERE replayed_at IS NOT NULL"), [{ n: 0 }]);
    assert.equal(await reveals(), revealedBefore, "no original decrypted, so no reveal audited");
    assert.deepEqual(await rows("SELECT (SELECT count(*)::int FROM public.rc_signups) AS s, (SELECT count(*)::int FROM public.rc_notes) AS n"), [{ s: 0, n: 0 }]);

    // The operator checked the record: by --id it replays as before.
    const byId = await runMasq(["quarantine", "replay", "--id", mine!.message_id, "--contract", v2], env());
    assert.equal(byId.code, 0, byId.stderr + byId.stdout);
    noPii(byId.stdout + byId.stderr);
    assert.equal(byId.stdout, "replayed 1, already replayed or gone 0, refused by the table 0\n");
    assert.deepEqual(await rows("SELECT account_id FROM public.rc_signups ORDER BY account_id"), [{ account_id: "late" }]);
    assert.deepEqual(await rows("SELECT user_id, replayed_at IS NOT NULL AS replayed FROM masq.quarantine ORDER BY user_id"), [
      { user_id: "late", replayed: true },
      { user_id: "note", replayed: false },
    ]);
  });
});
