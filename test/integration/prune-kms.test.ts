import assert from "node:assert/strict";
import { test } from "node:test";
import { CreateAliasCommand, CreateKeyCommand, KMSClient } from "@aws-sdk/client-kms";
import { CreateQueueCommand } from "@aws-sdk/client-sqs";
import { sendBodies } from "../../src/ops/demo.ts";
import { createSqsClient } from "../../src/ingest/sqs-client.ts";
import { useMotoFixture } from "../helpers/fixture.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { motoSkipReason } from "../helpers/moto.ts";
import { uniqueEvents } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";
import { TEST_CREDENTIALS } from "../helpers/sqs.ts";

/**
 * `masq vault prune` with the KMS provider on moto: each deleting batch seals its audit row with the audit key, which
 * only KMS unwraps (Decrypt, purpose=audit); the trail verifies and records the AWS caller.
 */
const skip = motoSkipReason();
const fx = useMotoFixture(skip);

test("vault prune with KMS: old-only values go, recent ones stay, the trail verifies", { skip }, async () => {
  const kms = new KMSClient({ region: "us-east-1", endpoint: fx.moto.endpoint, credentials: TEST_CREDENTIALS });
  const key = (await kms.send(new CreateKeyCommand({ Description: "masq prune" }))).KeyMetadata!;
  await kms.send(new CreateAliasCommand({ AliasName: "alias/masq-prune", TargetKeyId: key.KeyId }));
  const sqs = createSqsClient({ region: "us-east-1", endpoint: fx.moto.endpoint, credentials: TEST_CREDENTIALS });
  const queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: "login-queue-prune" }))).QueueUrl!;
  const env = masqEnv({
    queueUrl,
    sqsEndpoint: fx.moto.endpoint,
    databaseUrl: fx.pgdb.url,
    extra: { MASQ_KMS_KEY_ID: "alias/masq-prune", AWS_ENDPOINT_URL_KMS: fx.moto.endpoint, AWS_ENDPOINT_URL_STS: fx.moto.endpoint, MASQ_WAIT_TIME_SECONDS: "1" },
  });
  delete env.MASQ_MASTER_KEY;
  delete env.MASQ_PSEUDONYM_KEY;
  try {
    await sendBodies(sqs, queueUrl, uniqueEvents(200, 17, 0).map((e) => e.body));
    const run = spawnMasq(["run", "--drain"], env);
    assert.equal((await run.exited).code, 0, run.lines.slice(-10).join("\n"));
    // Half the users' rows become 100 days old (as the owner).
    await fx.db.pool.query("UPDATE public.user_logins SET create_date = current_date - 100 WHERE user_id IN (SELECT DISTINCT user_id FROM public.user_logins ORDER BY 1 LIMIT 50)");
    const prunable = await fx.db.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM masq.vault v WHERE NOT EXISTS (SELECT 1 FROM public.user_logins t WHERE t.create_date >= current_date - 30
         AND ((v.kind = 'ip' AND t.masked_ip = v.pseudonym) OR (v.kind = 'device_id' AND t.masked_device_id = v.pseudonym)))`,
    );
    assert.ok(prunable.rows[0]!.n > 0);
    const quiet = { ...env, MASQ_LOG_LEVEL: "silent", MASQ_VAULT_RETENTION_DAYS: "30" };
    const r = await runMasq(["vault", "prune"], quiet);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^pruned ${prunable.rows[0]!.n} of `));
    const orphans = await fx.db.pool.query(
      `SELECT 1 FROM public.user_logins t WHERE t.create_date >= current_date - 30 AND (
         NOT EXISTS (SELECT 1 FROM masq.vault v WHERE v.kind = 'ip' AND v.pseudonym = t.masked_ip) OR
         NOT EXISTS (SELECT 1 FROM masq.vault v WHERE v.kind = 'device_id' AND v.pseudonym = t.masked_device_id))`,
    );
    assert.equal(orphans.rowCount, 0);
    const audit = await fx.db.pool.query<{ aws: string | null }>("SELECT client_reported ->> 'aws_identity' AS aws FROM masq.audit WHERE action = 'vault-prune'");
    assert.ok(audit.rows.length > 0);
    assert.match(audit.rows[0]!.aws ?? "", /^arn:aws:(iam|sts)::\d{12}:/);
    const verify = await runMasq(["audit", "verify"], quiet);
    assert.equal(verify.code, 0, verify.stderr + verify.stdout);
  } finally {
    sqs.destroy();
    kms.destroy();
  }
});
