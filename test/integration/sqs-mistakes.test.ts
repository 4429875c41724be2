import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { DeleteQueueCommand } from "@aws-sdk/client-sqs";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { waitFor } from "../helpers/pipeline.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { motoCommand, motoSkipReason, startMoto, type Moto } from "../helpers/moto.ts";

/**
 * Mistakes are not outages: a setting that cannot work is never retried as "SQS not reachable". Each case exits at
 * once, 2 for a setting to fix and 1 for a permission, with one line on stderr naming what to fix, no stack trace.
 * Before, each of these waited forever (or, for a queue that does not exist, exited 1 with a JSON line only).
 */
const fx = usePipelineFixture();

async function expectRefusal(args: string[], env: NodeJS.ProcessEnv, want: { code: number; line: RegExp }): Promise<void> {
  const proc = spawnMasq(args, env);
  const { code } = await proc.exited;
  const all = proc.lines.join("\n");
  assert.equal(code, want.code, all);
  assert.ok(
    proc.lines.some((l) => l.startsWith("masq: ") && want.line.test(l)),
    `a one-line error matching ${String(want.line)}:\n${all}`,
  );
  assert.ok(!proc.lines.some((l) => /waiting|retrying/.test(l)), `never retried:\n${all}`);
  assert.ok(!proc.lines.some((l) => /^\s+at /.test(l)), `no stack trace:\n${all}`);
}

describe("SQS mistakes against fauxqs", () => {
  let home: string;
  before(() => {
    home = mkdtempSync(join(tmpdir(), "masq-no-aws-"));
  });
  after(() => rmSync(home, { recursive: true, force: true }));

  const base = () => masqEnv({ queueUrl: fx.sqs.newQueue(), sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url });

  test("no AWS credentials at all: exit 2 naming AWS_ACCESS_KEY_ID/AWS_PROFILE, for run and status", async () => {
    const env: NodeJS.ProcessEnv = { ...base(), HOME: home, AWS_CONFIG_FILE: join(home, "config"), AWS_SHARED_CREDENTIALS_FILE: join(home, "credentials") };
    delete env.AWS_ACCESS_KEY_ID;
    delete env.AWS_SECRET_ACCESS_KEY;
    for (const args of [["run", "--drain"], ["run"], ["status"]]) {
      await expectRefusal(args, env, { code: 2, line: /\(AWS_ACCESS_KEY_ID\/AWS_PROFILE\): no AWS credentials found/ });
    }
  });

  test('AWS_REGION="bad region!": exit 2 naming AWS_REGION', async () => {
    await expectRefusal(["run", "--drain"], { ...base(), AWS_REGION: "bad region!" }, { code: 2, line: /AWS_REGION/ });
  });

  test("a queue that does not exist: exit 2 naming QUEUE_URL, for run and status", async () => {
    const env = { ...base(), QUEUE_URL: `${fx.sqs.endpoint}/000000000000/no-such-queue` };
    for (const args of [["run", "--drain"], ["run"], ["status"]]) {
      await expectRefusal(args, env, { code: 2, line: /^masq: invalid setting \(QUEUE_URL\): no such queue: .*no-such-queue/ });
    }
  });

  test("a queue deleted while masq run runs: exit 1, one line in the documented format naming QUEUE_URL (a runtime failure, not a bad start)", async () => {
    const env: NodeJS.ProcessEnv = { ...base(), MASQ_WAIT_TIME_SECONDS: "1" };
    const proc = spawnMasq(["run"], env);
    await waitFor(() => proc.lines.some((l) => l.includes('"pipeline started"')), 30_000, "the pipeline to start");
    await fx.sqs.client.send(new DeleteQueueCommand({ QueueUrl: env.QUEUE_URL! }));
    const { code } = await proc.exited;
    const all = proc.lines.join("\n");
    assert.equal(code, 1, all);
    const errors = proc.lines.filter((l) => l.startsWith("masq: "));
    assert.equal(errors.length, 1, all);
    assert.match(errors[0]!, /^masq: a setting stopped working while masq ran \(QUEUE_URL\): no such queue: \S+ \(check the URL, AWS_REGION and the account\); nothing uncommitted was deleted: fix it and start masq again$/);
    assert.ok(!proc.lines.some((l) => /^\s+at /.test(l)), `no stack trace:\n${all}`);
  });

  test("MASQ_SQS_PROTOCOL=query against a JSON-only endpoint: exit 2 naming the setting and the one to use", async () => {
    for (const args of [["run", "--drain"], ["status"]]) {
      await expectRefusal(args, { ...base(), MASQ_SQS_PROTOCOL: "query" }, { code: 2, line: /\(MASQ_SQS_PROTOCOL\): is query, .*MASQ_SQS_PROTOCOL=json/ });
    }
  });
});

/**
 * moto's server enforces IAM once INITIAL_NO_AUTH_ACTION_COUNT requests have passed: the test creates the queue, a
 * user without any policy and that user's access key first (three requests, through moto's own Python and boto3).
 */
const motoSkip = motoSkipReason();
describe("SQS refusals against moto with IAM enforced", { skip: motoSkip }, () => {
  let moto: Moto;
  let queueUrl: string;
  let user: { id: string; secret: string };
  before(async () => {
    if (motoSkip) return;
    moto = await startMoto({ env: { INITIAL_NO_AUTH_ACTION_COUNT: "3" } });
    const python = join(dirname(realpathSync(motoCommand()![0]!)), "python");
    const out = execFileSync(python, ["-c", SETUP, moto.endpoint], { encoding: "utf8" }).trim().split("\n");
    queueUrl = out[0]!;
    const [id, secret] = out[1]!.split(" ");
    user = { id: id!, secret: secret! };
  });
  after(async () => {
    if (!motoSkip) await moto.stop();
  });

  const env = (creds: { id: string; secret: string }) => ({
    ...masqEnv({ queueUrl, sqsEndpoint: moto.endpoint, databaseUrl: fx.pgdb.url }),
    AWS_ACCESS_KEY_ID: creds.id,
    AWS_SECRET_ACCESS_KEY: creds.secret,
  });

  test("credentials the endpoint refuses: exit 2 naming AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, never the secret", async () => {
    const secret = "not-the-secret-of-any-key";
    const proc = spawnMasq(["run", "--drain"], env({ id: "AKIAIOSFODNN7EXAMPLE", secret }));
    await proc.exited;
    assert.ok(!proc.lines.some((l) => l.includes(secret)));
    await expectRefusal(["run", "--drain"], env({ id: "AKIAIOSFODNN7EXAMPLE", secret }), { code: 2, line: /\(AWS_ACCESS_KEY_ID\/AWS_SECRET_ACCESS_KEY\): SQS refused the AWS credentials/ });
  });

  test("an identity without sqs permissions: exit 1, access denied, naming the queue", async () => {
    await expectRefusal(["run", "--drain"], env(user), { code: 1, line: /access denied: grant the AWS identity sqs:GetQueueAttributes/ });
    // status reports it in its screen, with the rest, and exits 1.
    const status = spawnMasq(["status"], env(user));
    assert.equal((await status.exited).code, 1);
    assert.ok(status.lines.some((l) => /^ {4}error: .*access denied/.test(l)), status.lines.join("\n"));
  });
});

const SETUP = `
import sys, boto3
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
print(boto3.client("sqs", **kw).create_queue(QueueName="guarded")["QueueUrl"])
iam = boto3.client("iam", **kw)
iam.create_user(UserName="nobody")
key = iam.create_access_key(UserName="nobody")["AccessKey"]
print(key["AccessKeyId"], key["SecretAccessKey"])
`;
