import assert from "node:assert/strict";
import { test } from "node:test";
import { CreateAliasCommand, CreateKeyCommand, KMSClient } from "@aws-sdk/client-kms";
import { CreateQueueCommand } from "@aws-sdk/client-sqs";
import { sendBodies } from "../../src/ops/demo.ts";
import { createSqsClient } from "../../src/ingest/sqs-client.ts";
import { useMotoFixture } from "../helpers/fixture.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { motoSkipReason } from "../helpers/moto.ts";
import { runMasq } from "../helpers/run-masq.ts";
import { TEST_CREDENTIALS } from "../helpers/sqs.ts";

/**
 * `masq subject erase` under KMS (moto's KMS and STS): the audit key is unwrapped with KMS Decrypt (purpose=audit),
 * the trail verifies, and afterwards `masq unmask` finds none of the user's values while the other user's remain.
 */
const skip = motoSkipReason();
const fx = useMotoFixture(skip);

test("erasure with KMS: nothing of the user recoverable, the other user's values are, the trail verifies", { skip }, async () => {
  const kms = new KMSClient({ region: "us-east-1", endpoint: fx.moto.endpoint, credentials: TEST_CREDENTIALS });
  const key = (await kms.send(new CreateKeyCommand({ Description: "masq" }))).KeyMetadata!;
  await kms.send(new CreateAliasCommand({ AliasName: "alias/masq-erase", TargetKeyId: key.KeyId }));
  const sqs = createSqsClient({ region: "us-east-1", endpoint: fx.moto.endpoint, credentials: TEST_CREDENTIALS });
  const queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: "login-queue-erase" }))).QueueUrl!;
  const env = masqEnv({
    queueUrl,
    sqsEndpoint: fx.moto.endpoint,
    databaseUrl: fx.pgdb.url,
    extra: { MASQ_KMS_KEY_ID: "alias/masq-erase", AWS_ENDPOINT_URL_KMS: fx.moto.endpoint, AWS_ENDPOINT_URL_STS: fx.moto.endpoint, MASQ_WAIT_TIME_SECONDS: "1" },
  });
  delete env.MASQ_MASTER_KEY;
  delete env.MASQ_PSEUDONYM_KEY;
  const quiet = { ...env, MASQ_LOG_LEVEL: "silent" } as Record<string, string>;
  const event = (user: string, ip: string, device: string) => JSON.stringify({ user_id: user, app_version: "1.0.0", device_type: "android", ip, locale: "DE", device_id: device });
  try {
    await sendBodies(sqs, queueUrl, [event("kim", "192.0.2.10", "dev-kim"), event("kim", "192.0.2.11", "dev-kim"), event("lee", "192.0.2.11", "dev-lee")]);
    const run = spawnMasq(["run", "--drain"], env);
    assert.equal((await run.exited).code, 0, run.lines.slice(-10).join("\n"));
    const kimPseudonyms = (await fx.db.pool.query<{ p: string }>("SELECT DISTINCT unnest(ARRAY[masked_ip, masked_device_id]) AS p FROM public.user_logins WHERE user_id = 'kim'")).rows.map((r) => r.p);

    const erase = await runMasq(["subject", "erase", "--user-id", "kim", "--reason", "erasure request KMS-1"], quiet);
    assert.equal(erase.code, 0, erase.stderr);
    assert.match(erase.stdout, /rows\s+2\n/);
    assert.match(erase.stdout, /vault values\s+2 /, "192.0.2.10 and dev-kim; 192.0.2.11 is lee's too");

    const unmask = await runMasq(["unmask", "--reason", "check erasure KMS-1", ...kimPseudonyms.flatMap((p) => ["--pseudonym", p]), "--format", "json"], quiet);
    assert.equal(unmask.code, 0, unmask.stderr);
    const values = (JSON.parse(unmask.stdout) as { value: string }[]).map((v) => v.value);
    assert.deepEqual(values, ["192.0.2.11"], "only the value lee shares is still recoverable");
    const lee = await runMasq(["unmask", "--reason", "check erasure KMS-1", "--user-id", "lee", "--format", "json"], quiet);
    assert.deepEqual((JSON.parse(lee.stdout) as { value: string }[]).map((v) => v.value).sort(), ["192.0.2.11", "dev-lee"]);

    const verify = await runMasq(["audit", "verify"], quiet);
    assert.equal(verify.code, 0, verify.stderr);
    const rows = await fx.db.pool.query<{ subjects: string[]; whole: string }>("SELECT subjects, a::text AS whole FROM masq.audit a WHERE action = 'subject-erase'");
    assert.equal(rows.rows.length, 2);
    for (const r of rows.rows) {
      assert.match(r.subjects[0]!, /^v1:[0-9a-f]{32}$/);
      assert.ok(!r.whole.includes("kim"));
    }
  } finally {
    sqs.destroy();
    kms.destroy();
  }
});
