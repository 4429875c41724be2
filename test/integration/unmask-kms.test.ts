import assert from "node:assert/strict";
import { test } from "node:test";
import { CreateAliasCommand, CreateKeyCommand, KMSClient } from "@aws-sdk/client-kms";
import { CreateQueueCommand } from "@aws-sdk/client-sqs";
import { sendBodies } from "../../src/ops/demo.ts";
import { createSqsClient } from "../../src/ingest/sqs-client.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { useMotoFixture } from "../helpers/fixture.ts";
import { motoSkipReason } from "../helpers/moto.ts";
import { uniqueEvents } from "../helpers/pipeline.ts";
import { TEST_CREDENTIALS } from "../helpers/sqs.ts";

/**
 * The KMS provider end to end against moto's real KMS (and STS) server: `masq run` keeps its keys wrapped by KMS,
 * calling it once per key, never per message; `masq unmask` recovers values with KMS Decrypt and records the AWS
 * caller; and when KMS refuses to decrypt it reveals nothing and says why.
 */
const skip = motoSkipReason();
const fx = useMotoFixture(skip);

test("ingestion and unmask with KMS; when KMS refuses to decrypt, unmask reveals nothing", { skip }, async () => {
  const kms = new KMSClient({ region: "us-east-1", endpoint: fx.moto.endpoint, credentials: TEST_CREDENTIALS });
  const key = (await kms.send(new CreateKeyCommand({ Description: "masq" }))).KeyMetadata!;
  await kms.send(new CreateAliasCommand({ AliasName: "alias/masq", TargetKeyId: key.KeyId }));
  const sqs = createSqsClient({ region: "us-east-1", endpoint: fx.moto.endpoint, credentials: TEST_CREDENTIALS });
  const queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: "login-queue-unmask" }))).QueueUrl!;
  const env = masqEnv({
    queueUrl,
    sqsEndpoint: fx.moto.endpoint,
    databaseUrl: fx.pgdb.url,
    extra: { MASQ_KMS_KEY_ID: "alias/masq", AWS_ENDPOINT_URL_KMS: fx.moto.endpoint, AWS_ENDPOINT_URL_STS: fx.moto.endpoint, MASQ_WAIT_TIME_SECONDS: "1" },
  });
  delete env.MASQ_MASTER_KEY;
  delete env.MASQ_PSEUDONYM_KEY;

  try {
    const events = uniqueEvents(800, 91, 0);
    await sendBodies(sqs, queueUrl, events.map((e) => e.body));
    const run = spawnMasq(["run", "--drain"], env);
    assert.equal((await run.exited).code, 0, run.lines.slice(-10).join("\n"));
    // One KMS GenerateDataKey for the pseudonym key and one for the vault's data key: 800 messages, two calls.
    const keys = await fx.db.pool.query<{ what: string; provider: string; master_key_id: string }>(
      `SELECT 'data' AS what, provider, master_key_id FROM masq.data_keys
       UNION ALL SELECT 'pseudonym', provider, master_key_id FROM masq.pseudonym_keys ORDER BY 1`,
    );
    assert.deepEqual(keys.rows, [
      { what: "data", provider: "kms", master_key_id: key.Arn },
      { what: "pseudonym", provider: "kms", master_key_id: key.Arn },
    ]);

    const first = JSON.parse(events[0]!.body) as { user_id: string; device_id: string };
    const unmask = spawnMasq(["unmask", "--reason", "kms test", "--user-id", first.user_id, "--kind", "device_id", "--format", "json"], { ...env, MASQ_LOG_LEVEL: "silent" });
    assert.equal((await unmask.exited).code, 0, unmask.lines.join("\n"));
    const values = JSON.parse(unmask.lines.join("\n")) as { kind: string; value: string }[];
    assert.deepEqual(values.map((v) => [v.kind, v.value]), [["device_id", first.device_id]]);
    const audit = await fx.db.pool.query<{ aws_identity: string | null }>("SELECT aws_identity FROM masq.unmask_audit WHERE reason = 'kms test'");
    assert.match(audit.rows[0]?.aws_identity ?? "", /^arn:aws:(iam|sts)::\d{12}:/, "the AWS caller is recorded");

    // Without decrypt rights. moto enforces neither IAM nor a key's state on Decrypt (a disabled key still decrypts
    // there), so the caller is one whose KMS cannot reach the key: another region, where KMS answers NotFound, as it
    // answers AccessDenied to a caller without kms:Decrypt. Either way KMS refuses, and masq reveals nothing.
    const denied = spawnMasq(["unmask", "--reason", "kms test, no decrypt rights", "--user-id", first.user_id], { ...env, AWS_REGION: "eu-west-1", MASQ_LOG_LEVEL: "silent" });
    const { code } = await denied.exited;
    const out = denied.lines.join("\n");
    assert.notEqual(code, 0);
    assert.ok(!out.includes(first.device_id), "nothing revealed");
    assert.match(out, /KMS Decrypt: NotFoundException.*nothing was shown/);
  } finally {
    sqs.destroy();
    kms.destroy();
  }
});
