import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { closedPort, INTERNALS, runMasq, type MasqRun } from "../helpers/masq-run.ts";
import { TEST_MASTER_KEY_HEX } from "../helpers/pipeline.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";
import { TEST_CREDENTIALS } from "../helpers/sqs.ts";

/**
 * The config file layer (--config, MASQ_CONFIG), through bin/masq as a person runs it: flags beat the environment,
 * which beats the file, which beats the defaults; a mistake in the file exits 2 naming the file, line:col and key,
 * and never prints a secret value.
 */

const dir = mkdtempSync(path.join(tmpdir(), "masq-config-file-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const CONTRACTS = path.resolve("contracts");

/** A config file with these lines, readable by its owner only unless `mode` says otherwise. */
function configFile(name: string, lines: string[], mode = 0o600): string {
  const file = path.join(dir, name);
  writeFileSync(file, `${lines.join("\n")}\n`);
  chmodSync(file, mode);
  return file;
}

/** The least environment: nothing of the user's shell, so only what a test gives is set. */
function bare(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: dir, ...extra };
}

function output(r: MasqRun): string {
  return r.stdout + r.stderr;
}

/** A refusal: exit 2, one line on stderr, nothing on stdout, no internals. */
function assertRefused(r: MasqRun, ...expected: RegExp[]): void {
  assert.equal(r.code, 2, output(r));
  assert.equal(r.stdout, "");
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  for (const e of expected) assert.match(lines[0]!, e);
  assert.ok(!INTERNALS.test(r.stderr), r.stderr);
}

describe("precedence: flag > environment > file > default", () => {
  const contractFile = configFile("contract.yaml", ["# the contract masq check --offline reads", `MASQ_CONTRACT: ${CONTRACTS}/examples/purchase.yaml`]);
  const contractOf = async (args: string[], env: Record<string, string> = {}) => {
    const r = await runMasq(["check", "--offline", ...args], bare(env));
    assert.equal(r.code, 0, output(r));
    return /^ok {4}contract: (\S+):/m.exec(r.stdout)?.[1];
  };

  test("MASQ_CONTRACT (masq check --offline)", async () => {
    assert.equal(await contractOf([]), `${CONTRACTS}/login.yaml`, "the default: the shipped login contract");
    assert.equal(await contractOf(["--config", contractFile]), `${CONTRACTS}/examples/purchase.yaml`, "the file over the default");
    assert.equal(await contractOf([], { MASQ_CONFIG: contractFile }), `${CONTRACTS}/examples/purchase.yaml`, "MASQ_CONFIG names the file too");
    const env = { MASQ_CONTRACT: `${CONTRACTS}/examples/page-view.yaml` };
    assert.equal(await contractOf(["--config", contractFile], env), `${CONTRACTS}/examples/page-view.yaml`, "the environment over the file");
    assert.equal(await contractOf(["--config", contractFile], { MASQ_CONTRACT: "" }), `${CONTRACTS}/examples/purchase.yaml`, "an empty variable is unset: the file's value stands");
    assert.equal(await contractOf(["--config", contractFile, "--contract", `${CONTRACTS}/login.yaml`], env), `${CONTRACTS}/login.yaml`, "the flag over both");
  });

  test("MASQ_TABLE and QUEUE_URL (masq check's configuration line)", async () => {
    const sqs = await closedPort();
    const pgPort = await closedPort();
    const queue = (name: string) => `http://127.0.0.1:${sqs}/000000000000/${name}`;
    const file = configFile("check.yaml", [`QUEUE_URL: ${queue("from-file")}`, "MASQ_TABLE: ingest.from_file", `MASQ_MASTER_KEY: ${TEST_MASTER_KEY_HEX}`]);
    const configuration = async (args: string[], env: Record<string, string> = {}) => {
      const r = await runMasq(["check", ...args], bare({
        AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
        DATABASE_URL: `postgres://masq@127.0.0.1:${pgPort}/none`,
        MASQ_CONNECT_TIMEOUT_SECONDS: "1",
        ...env,
      }));
      assert.ok(!output(r).includes(TEST_MASTER_KEY_HEX), "the master key is never printed");
      return r.stdout.split("\n").filter((l) => / configuration: /.test(l));
    };
    const [fromFile, fromEnv, fromFlags, fromDefaults] = await Promise.all([
      configuration(["--config", file]),
      configuration(["--config", file], { QUEUE_URL: queue("from-env"), MASQ_TABLE: "ingest.from_env" }),
      configuration(["--config", file, "--queue-url", queue("from-flag"), "--table", "ingest.from_flag"], { QUEUE_URL: queue("from-env"), MASQ_TABLE: "ingest.from_env" }),
      configuration([], { MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, QUEUE_URL: queue("from-env") }),
    ]);
    assert.deepEqual(fromFile, [`ok    configuration: queue ${queue("from-file")}, table "ingest"."from_file", key provider local`]);
    assert.deepEqual(fromEnv, [`ok    configuration: queue ${queue("from-env")}, table "ingest"."from_env", key provider local`]);
    assert.deepEqual(fromFlags, [`ok    configuration: queue ${queue("from-flag")}, table "ingest"."from_flag", key provider local`]);
    assert.deepEqual(fromDefaults, [`ok    configuration: queue ${queue("from-env")}, table "public"."user_logins", key provider local`]);
  });
});

describe("a config file drives a command against a real server", () => {
  let pgdb: TestDatabase;
  before(async () => {
    pgdb = await createTestDatabase();
  });
  after(async () => {
    await pgdb.close();
  });
  async function withAdmin(fn: (c: pg.Client) => Promise<unknown>): Promise<void> {
    const c = new pg.Client({ connectionString: pgdb.url });
    await c.connect();
    try {
      await fn(c);
    } finally {
      await c.end();
    }
  }

  test("masq migrate takes DATABASE_URL (with a password) and MASQ_TABLE from a file only its owner reads", async () => {
    // A login of its own with a password of its own, so that the embedded server (which checks passwords) and the
    // machine's (which may trust local connections) both take it; what counts is that it is never printed.
    const secret = "pw-in-the-file";
    const role = `masq_cfg_${process.pid}`;
    await withAdmin((c) => c.query(`CREATE ROLE ${role} LOGIN SUPERUSER PASSWORD '${secret}'`));
    after(() => withAdmin(async (c) => {
      await c.query(`REASSIGN OWNED BY ${role} TO CURRENT_USER`);
      await c.query(`DROP OWNED BY ${role}`);
      await c.query(`DROP ROLE ${role}`);
    }));
    const url = new URL(pgdb.url);
    url.username = role;
    url.password = secret;
    const file = configFile("migrate.yaml", [`DATABASE_URL: ${url.toString()}`, "MASQ_TABLE: from_config_file", "MASQ_LOG_LEVEL: warn"]);
    const r = await runMasq(["migrate", "--config", file], bare());
    assert.equal(r.code, 0, output(r));
    assert.ok(!output(r).includes(secret));
    assert.ok(!/database is up to date/.test(r.stdout), "MASQ_LOG_LEVEL: warn from the file hides the info line");
    const client = new pg.Client({ connectionString: pgdb.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ t: string | null }>("SELECT to_regclass('public.from_config_file')::text AS t");
      assert.equal(rows[0]!.t, "from_config_file");
    } finally {
      await client.end();
    }

    chmodSync(file, 0o644);
    const refused = await runMasq(["migrate", "--config", file], bare());
    assertRefused(refused, /^masq: secret in a config file others can read \(DATABASE_URL in .*migrate\.yaml:1:15\): .*mode 0644.*chmod 600/);
    assert.ok(!output(refused).includes(secret));
  });
});

describe("mistakes in a config file exit 2, naming the file, line:col and key", () => {
  test("an unknown key, a flag's name for a key, a fallback variable", async () => {
    const typo = configFile("typo.yaml", ["MASQ_TABLE: logins", "MASQ_RECIEVERS: 4"]);
    assertRefused(await runMasq(["check", "--offline", "--config", typo], bare()), /^masq: unknown setting in config file \(MASQ_RECIEVERS in .*typo\.yaml:2:1\): is not a setting; did you mean MASQ_RECEIVERS\?$/);
    const flag = configFile("flag.yaml", ["batch-size: 500"]);
    assertRefused(await runMasq(["check", "--offline", "--config", flag], bare()), /\(batch-size in .*flag\.yaml:1:1\): .*write MASQ_BATCH_SIZE$/);
    const fallback = configFile("fallback.yaml", ["AWS_DEFAULT_REGION: eu-west-1"]);
    assertRefused(await runMasq(["check", "--offline", "--config", fallback], bare()), /\(AWS_DEFAULT_REGION in .*fallback\.yaml:1:1\): .*write AWS_REGION$/);
    const nested = configFile("nested.yaml", ["MASQ_CONFIG: other.yaml"]);
    assertRefused(await runMasq(["check", "--offline", "--config", nested], bare()), /\(MASQ_CONFIG in .*nested\.yaml:1:1\): is not a setting a config file may hold/);
  });

  test("a bad value, with the line and column of the value, the same words as for the variable", async () => {
    const file = configFile("bad.yaml", ["# pipeline", "MASQ_BATCH_SIZE: lots"]);
    const r = await runMasq(["check", "--offline", "--config", file], bare());
    assertRefused(r, /^masq: invalid setting \(MASQ_BATCH_SIZE in .*bad\.yaml:2:18\): must be a whole number from 1 to 10000 \(got "lots"\)$/);
    // Checked whole: `check --offline` reads no batch size, and is refused all the same.
  });

  test("a wrong type, an empty value, a file that is not a map, malformed YAML", async () => {
    const cases: [lines: string[], expected: RegExp][] = [
      [["MASQ_TABLE: [a, b]"], /^masq: invalid config file \(MASQ_TABLE in .*\.yaml:1:13\): must be one value/],
      [["MASQ_TABLE: {schema: a}"], /^masq: invalid config file \(MASQ_TABLE in .*\.yaml:1:13\): must be one value/],
      [["MASQ_TABLE:"], /^masq: invalid setting \(MASQ_TABLE in .*\.yaml:1:\d+\): has no value; .*remove the line/],
      [["- MASQ_TABLE: a"], /^masq: invalid config file \(.*\.yaml:1:1\): must be a map of settings/],
      [["MASQ_TABLE: a", "MASQ_TABLE: b"], /^masq: invalid config file \(.*\.yaml:2:1\): is not valid YAML: Map keys must be unique/],
      [["MASQ_TABLE: a", "  MASQ_BATCH_SIZE: 5"], /^masq: invalid config file \(.*\.yaml:1:\d+\): is not valid YAML: /],
    ];
    for (const [i, [lines, expected]] of cases.entries()) {
      const file = configFile(`wrong-${i}.yaml`, lines);
      assertRefused(await runMasq(["check", "--offline", "--config", file], bare()), expected);
    }
  });

  test("a missing file, named by --config or MASQ_CONFIG", async () => {
    const missing = path.join(dir, "absent.yaml");
    assertRefused(await runMasq(["check", "--offline", "--config", missing], bare()), new RegExp(`^masq: invalid setting \\(--config\\): cannot read the config file ${missing} \\(ENOENT\\); check the path`));
    assertRefused(await runMasq(["status"], bare({ MASQ_CONFIG: missing })), /^masq: invalid setting \(MASQ_CONFIG\): cannot read the config file .*absent\.yaml \(ENOENT\)/);
  });
});

describe("secrets in a config file are never printed", () => {
  const SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQ";

  test("a value a secret setting refuses, malformed YAML around one, a secret others may read", async () => {
    const cases: [name: string, lines: string[], mode: number, expected: RegExp][] = [
      ["bad-key", [`MASQ_MASTER_KEY: ${SECRET}`], 0o600, /^masq: invalid setting \(MASQ_MASTER_KEY in .*:1:18\): must be exactly 32 bytes/],
      ["bad-pseudonym", [`MASQ_PSEUDONYM_KEY: ${SECRET}`], 0o600, /^masq: invalid setting \(MASQ_PSEUDONYM_KEY in .*:1:21\)/],
      ["in-a-key", [`MASQ_MASTER_KEY ${SECRET}: 1`], 0o600, /^masq: unknown setting in config file \(a key in .*in-a-key\.yaml:1:1\): is not a setting's name \(not shown/],
      ["unterminated", [`MASQ_MASTER_KEY: "${SECRET}`], 0o600, /^masq: invalid config file \(.*unterminated\.yaml:2:1\): is not valid YAML: Missing closing "quote$/],
      ["shared-key", [`MASQ_MASTER_KEY: ${TEST_MASTER_KEY_HEX}`], 0o640, /^masq: secret in a config file others can read \(MASQ_MASTER_KEY in .*:1:18\): is a secret, and other users may read .* \(mode 0640\); chmod 600 .*, or give MASQ_MASTER_KEY in the environment instead$/],
      ["shared-previous", [`MASQ_MASTER_KEY_PREVIOUS: ${TEST_MASTER_KEY_HEX}`], 0o604, /^masq: secret in a config file others can read \(MASQ_MASTER_KEY_PREVIOUS in /],
      ["shared-url", [`DATABASE_URL: host=db user=masq password=${SECRET}`], 0o644, /^masq: secret in a config file others can read \(DATABASE_URL in /],
    ];
    for (const [name, lines, mode, expected] of cases) {
      const r = await runMasq(["check", "--offline", "--config", configFile(`${name}.yaml`, lines, mode)], bare());
      assertRefused(r, expected);
      assert.ok(!output(r).includes(SECRET) && !output(r).includes(TEST_MASTER_KEY_HEX), `${name}: ${output(r)}`);
    }
  });

  test("settings that are not secret may be in a file others read; a URL without a password is not a secret", async () => {
    const file = configFile("shared.yaml", [`MASQ_CONTRACT: ${CONTRACTS}/login.yaml`, "DATABASE_URL: postgres://masq@db/logins", "MASQ_BATCH_SIZE: 500"], 0o644);
    const r = await runMasq(["check", "--offline", "--config", file], bare());
    assert.equal(r.code, 0, output(r));
  });
});
