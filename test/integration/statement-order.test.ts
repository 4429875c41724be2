import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { sendBodies } from "../../src/ops/demo.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { makeRunner, TEST_KEY, TEST_MASTER_KEY_HEX } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";

const PRELOAD = fileURLToPath(new URL("../helpers/statement-log.ts", import.meta.url));
const login = (user: string, ip: string, device: string) =>
  JSON.stringify({ user_id: user, app_version: "5.2.19", device_type: "ios", ip, locale: "US", device_id: device });

/**
 * What `masq unmask` and `masq subject erase` send to Postgres, statement by statement: the audit row is appended,
 * sealed and committed before any value is handed out or anything deleted, and the finishing row of an erasure is
 * sealed and committed after its last batch. The counts (round trips) are printed as the test's diagnostics.
 */
describe("the statements of the audited commands", () => {
  const fx = usePipelineFixture();
  const dir = mkdtempSync(join(tmpdir(), "masq-statements-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  const sentBy = async (args: string[], name: string): Promise<string[]> => {
    const log = join(dir, `${name}.jsonl`);
    const env = {
      DATABASE_URL: fx.pgdb.url,
      MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX,
      MASQ_PSEUDONYM_KEY: Buffer.from(TEST_KEY).toString("hex"),
      MASQ_LOG_LEVEL: "silent",
      NODE_OPTIONS: `--import=${PRELOAD}`,
      MASQ_TEST_STATEMENT_LOG: log,
    };
    const r = await runMasq(args, env);
    assert.equal(r.code, 0, r.stderr);
    const lines = readFileSync(log, "utf8").trim().split("\n");
    return lines.flatMap((l) => (JSON.parse(l) as { statements: string[] }).statements);
  };
  /** Index of the first statement matching `re` at or after `from`. */
  const at = (sent: string[], re: RegExp, from = 0) => {
    const i = sent.findIndex((s, j) => j >= from && re.test(s));
    assert.ok(i >= 0, `no statement matches ${re}: ${sent.join(" | ")}`);
    return i;
  };

  test("unmask: append, seal, COMMIT, then the ciphertexts; erase: the intent row committed before the first batch, the done row after the last", async (t) => {
    await fx.reset();
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, [login("alice", "198.51.100.1", "dev-alice-1"), login("alice", "203.0.113.50", "dev-alice-2"), login("bob", "203.0.113.50", "dev-bob")]);
    await (await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl })).run({ drain: true });
    const bob = (await fx.db.pool.query<{ masked_ip: string }>("SELECT masked_ip FROM public.user_logins WHERE user_id = 'bob'")).rows[0]!.masked_ip;
    // The first audited action creates the audit key: not what is measured.
    await sentBy(["unmask", "--reason", "creates the audit key", "--pseudonym", bob], "warm-up");

    for (const [name, args] of [
      ["unmask --pseudonym", ["unmask", "--reason", "statement order", "--pseudonym", bob]],
      ["unmask --user-id", ["unmask", "--reason", "statement order", "--user-id", "alice"]],
    ] as const) {
      const sent = await sentBy([...args], name.replace(/\W+/g, "-"));
      const append = at(sent, /masq\.audit_reveal_vault\(/);
      const begin = sent.lastIndexOf("BEGIN", append);
      const seal = at(sent, /masq\.audit_seal\(/, append);
      const commit = at(sent, /^COMMIT$/, seal);
      const reveal = at(sent, /masq\.vault_ciphertexts\(/);
      assert.ok(begin >= 0 && begin < append && append < seal && seal < commit && commit < reveal, sent.join(" | "));
      t.diagnostic(`${name}: ${sent.length} statements`);
    }

    const sent = await sentBy(["subject", "erase", "--user-id", "alice", "--reason", "statement order"], "erase");
    const intent = at(sent, /masq\.audit_subject_erase\(/);
    const intentCommit = at(sent, /^COMMIT$/, at(sent, /masq\.audit_seal\(/, intent));
    const batches = sent.flatMap((s, i) => (/masq\.erase_subject_batch\(/.test(s) ? [i] : []));
    const done = at(sent, /masq\.audit_subject_erased\(/);
    const doneCommit = at(sent, /^COMMIT$/, at(sent, /masq\.audit_seal\(/, done));
    assert.ok(batches.length > 0 && intentCommit < batches[0]! && batches.at(-1)! < done && done < doneCommit, sent.join(" | "));
    // A watched batch (lock-watch.ts watchedQuery): its statements on the batch's connection, from its time limit to RESET.
    const perBatch = at(sent, /^RESET statement_timeout$/, batches[0]) - sent.lastIndexOf(sent.slice(0, batches[0]).findLast((s) => /set_config\('statement_timeout'/.test(s))!, batches[0]) + 1;
    // Its time limit and the backend's pid in one round trip, then the batch, then RESET (4 before they were merged).
    assert.equal(perBatch, 3, sent.join(" | "));
    t.diagnostic(`subject erase: ${sent.length} statements (${batches.length} batches, ${perBatch} statements per watched batch)`);
  });
});
