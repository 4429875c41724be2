import assert from "node:assert/strict";
import { test } from "node:test";
import { CreateAliasCommand, CreateKeyCommand, KMSClient } from "@aws-sdk/client-kms";
import { CreateQueueCommand } from "@aws-sdk/client-sqs";
import { sendBodies } from "../../src/ops/demo.ts";
import { createSqsClient } from "../../src/ingest/sqs-client.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { useMotoFixture } from "../helpers/fixture.ts";
import { motoSkipReason } from "../helpers/moto.ts";
import { runMasq } from "../helpers/run-masq.ts";
import { TEST_CREDENTIALS } from "../helpers/sqs.ts";

/**
 * `masq subject export` and `masq quarantine show --original` with the KMS provider on moto: the values and the
 * original come back through KMS Decrypt, the audit records the AWS caller, and without decrypt rights nothing is
 * shown.
 */
const skip = motoSkipReason();
const fx = useMotoFixture(skip);

test("subject export and a quarantined original with KMS; when KMS refuses to decrypt, nothing is shown", { skip }, async () => {
  const kms = new KMSClient({ region: "us-east-1", endpoint: fx.moto.endpoint, credentials: TEST_CREDENTIALS });
  const key = (await kms.send(new CreateKeyCommand({ Description: "masq" }))).KeyMetadata!;
  await kms.send(new CreateAliasCommand({ AliasName: "alias/masq", TargetKeyId: key.KeyId }));
  const sqs = createSqsClient({ region: "us-east-1", endpoint: fx.moto.endpoint, credentials: TEST_CREDENTIALS });
  const queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: "login-queue-subject" }))).QueueUrl!;
  const env = masqEnv({
    queueUrl,
    sqsEndpoint: fx.moto.endpoint,
    databaseUrl: fx.pgdb.url,
    extra: { MASQ_KMS_KEY_ID: "alias/masq", AWS_ENDPOINT_URL_KMS: fx.moto.endpoint, AWS_ENDPOINT_URL_STS: fx.moto.endpoint, MASQ_WAIT_TIME_SECONDS: "1" },
  });
  delete env.MASQ_MASTER_KEY;
  delete env.MASQ_PSEUDONYM_KEY;
  const quiet = { ...env, MASQ_LOG_LEVEL: "silent" };
  try {
    const login = (user: string, i: number) => JSON.stringify({ user_id: user, ip: `192.0.2.${i}`, device_id: `${user}-dev-${i}`, device_type: "ios", app_version: "1.0" });
    const bodies = [...[1, 2, 3].map((i) => login("kim", i)), ...[4, 5].map((i) => login("lee", i)), JSON.stringify({ user_id: "kim", ip: "192.0.2.300", device_id: "kim-bad", device_type: "ios", app_version: "1.0" })];
    await sendBodies(sqs, queueUrl, bodies);
    const run = spawnMasq(["run", "--drain"], env);
    assert.equal((await run.exited).code, 0, run.lines.slice(-10).join("\n"));

    const r = await runMasq(["subject", "export", "--user-id", "kim", "--reason", "kms access request", "--format", "json"], quiet);
    assert.equal(r.code, 0, r.stderr);
    const lines = JSON.parse(r.stdout) as { source: string; ip?: string; device_id?: string; original?: string }[];
    assert.deepEqual(lines.filter((l) => l.source === "row").map((l) => [l.ip, l.device_id]).sort(), [1, 2, 3].map((i) => [`192.0.2.${i}`, `kim-dev-${i}`]));
    assert.match(lines.find((l) => l.source === "quarantined")!.original!, /kim-bad/);
    assert.ok(!r.stdout.includes("lee"));
    const audit = await fx.db.pool.query<{ client_reported: { aws_identity?: string } }>("SELECT client_reported FROM masq.audit WHERE action = 'subject-export'");
    assert.match(audit.rows[0]?.client_reported.aws_identity ?? "", /^arn:aws:(iam|sts)::\d{12}:/, "the AWS caller is recorded");

    const id = (await fx.db.pool.query<{ message_id: string }>("SELECT message_id FROM masq.quarantine WHERE user_id = 'kim'")).rows[0]!.message_id;
    const original = await runMasq(["quarantine", "show", id, "--original", "--reason", "kms why refused"], quiet);
    assert.equal(original.code, 0, original.stderr);
    assert.match(original.stdout, /"ip":"192\.0\.2\.300"/);

    // A caller whose KMS cannot reach the key (another region; see unmask-kms.test.ts): nothing revealed.
    const denied = await runMasq(["subject", "export", "--user-id", "kim", "--reason", "kms, no decrypt rights"], { ...quiet, AWS_REGION: "eu-west-1" });
    assert.notEqual(denied.code, 0);
    assert.equal(denied.stdout, "");
    assert.match(denied.stderr, /KMS Decrypt: NotFoundException.*nothing was shown/);
    const recorded = await fx.db.pool.query("SELECT 1 FROM masq.audit WHERE reason = 'kms, no decrypt rights'");
    assert.equal(recorded.rowCount, 0, "the audit key is unwrapped first: a refused master key records nothing");
  } finally {
    sqs.destroy();
    kms.destroy();
  }
});
