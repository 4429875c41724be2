import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { TEST_MASTER_KEY_HEX } from "../helpers/pipeline.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";

const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

let pgdb: TestDatabase;
let unpacked: string;

before(async () => {
  pgdb = await createTestDatabase();
  // Outside the checkout: the zip holds no node_modules, and nothing above it may lend it one.
  unpacked = mkdtempSync(join(tmpdir(), "masq-lambda-zip-"));
});
after(async () => {
  rmSync(unpacked, { recursive: true, force: true });
  await pgdb.close();
});

test("the zip deploy/lambda/package.sh builds runs on its own: its handler writes a row, with no node_modules beside it", async (t) => {
  const built = spawnSync("bash", ["deploy/lambda/package.sh"], { cwd: REPO_ROOT, encoding: "utf8", timeout: 240_000 });
  if (built.status !== 0 && /ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|network/i.test(built.stderr)) {
    t.skip("the npm registry is unreachable, and package.sh fetches esbuild with npx");
    return;
  }
  assert.equal(built.status, 0, built.stderr);
  const unzip = spawnSync("unzip", ["-q", join(REPO_ROOT, "dist/masq-lambda.zip"), "-d", unpacked], { encoding: "utf8" });
  if (unzip.error !== undefined) {
    t.skip("no unzip on this machine");
    return;
  }
  assert.equal(unzip.status, 0, unzip.stderr);

  const invoke = join(unpacked, "invoke.mjs");
  const body = JSON.stringify({ user_id: "u-1", app_version: "1.2.3", device_type: "ios", ip: "10.0.0.1", locale: "en-US", device_id: "d-1" });
  const event = {
    Records: [
      {
        messageId: "m-1",
        receiptHandle: "r-1",
        body,
        attributes: { ApproximateReceiveCount: "1", SentTimestamp: String(Date.UTC(2024, 2, 5)) },
        eventSource: "aws:sqs",
        eventSourceARN: "arn:aws:sqs:us-east-1:000000000000:login-queue",
        awsRegion: "us-east-1",
      },
    ],
  };
  writeFileSync(
    invoke,
    `const { handler } = await import("./dist/lambda/index.mjs");\nprocess.stdout.write(JSON.stringify(await handler(${JSON.stringify(event)}, {})) + "\\n");\n`,
  );
  const r = spawnSync(process.execPath, [invoke], {
    cwd: unpacked,
    encoding: "utf8",
    timeout: 60_000,
    env: { PATH: process.env.PATH, DATABASE_URL: pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, AWS_REGION: "us-east-1", MASQ_LOG_LEVEL: "warn" },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim().split("\n").at(-1), '{"batchItemFailures":[]}', r.stdout + r.stderr);

  const client = new pg.Client({ connectionString: pgdb.url });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: number }>("SELECT count(*)::int AS n FROM public.user_logins");
    assert.equal(rows[0]!.n, 1);
  } finally {
    await client.end();
  }

  // A contract packaged with the function (MASQ_CONTRACT, a path in its file system): its tables are made first by
  // `masq migrate --contract`, as the owner; the bundle then loads its events by it, with nothing else beside it.
  const contractFile = join(unpacked, "events.yaml");
  copyFileSync(join(REPO_ROOT, "bench/contracts/three-types.yaml"), contractFile);
  const ownerEnv = { PATH: process.env.PATH, DATABASE_URL: pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, AWS_REGION: "us-east-1", MASQ_LOG_LEVEL: "warn" };
  const migrated = spawnSync(process.execPath, [join(REPO_ROOT, "bin/masq"), "migrate", "--contract", contractFile], { encoding: "utf8", timeout: 120_000, env: ownerEnv });
  assert.equal(migrated.status, 0, migrated.stderr);
  const purchase = JSON.stringify({ type: "purchase", account_id: "a-1", email: "ada@example.com", card: { last4: "4242", brand: "visa" }, amount_cents: 1999 });
  const contractEvent = { Records: [{ ...event.Records[0]!, messageId: "m-2", receiptHandle: "r-2", body: purchase }] };
  const invokeContract = join(unpacked, "invoke-contract.mjs");
  writeFileSync(
    invokeContract,
    `const { handler } = await import("./dist/lambda/index.mjs");\nprocess.stdout.write(JSON.stringify(await handler(${JSON.stringify(contractEvent)}, {})) + "\\n");\n`,
  );
  const rc = spawnSync(process.execPath, [invokeContract], { cwd: unpacked, encoding: "utf8", timeout: 60_000, env: { ...ownerEnv, MASQ_CONTRACT: contractFile } });
  assert.equal(rc.status, 0, rc.stderr);
  assert.equal(rc.stdout.trim().split("\n").at(-1), '{"batchItemFailures":[]}', rc.stdout + rc.stderr);
  const check = new pg.Client({ connectionString: pgdb.url });
  await check.connect();
  try {
    const { rows } = await check.query<{ account_id: string; masked_email: string; amount_bucket: number }>("SELECT account_id, masked_email, amount_bucket FROM public.bench_purchases");
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.account_id, "a-1");
    assert.match(rows[0]!.masked_email, /^[0-9a-f]{64}$/);
  } finally {
    await check.end();
  }
});
