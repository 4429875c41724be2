import assert from "node:assert/strict";
import { test } from "node:test";
import { CreateAliasCommand, CreateKeyCommand, KMSClient } from "@aws-sdk/client-kms";
import { prepareDatabase } from "../../src/db/prepare-database.ts";
import { sendBodies } from "../../src/ops/demo.ts";
import { createLogger } from "../../src/log.ts";
import { createDb } from "../../src/db/pool.ts";
import { localStackSkipReason } from "../helpers/localstack.ts";
import { spawnMasq } from "../helpers/masq-process.ts";
import { TABLE, uniqueEvents } from "../helpers/pipeline.ts";
import { createTestDatabase } from "../helpers/postgres.ts";
import { TEST_CREDENTIALS } from "../helpers/sqs.ts";
import { backToBackDrains, stopStrandsNothing } from "../helpers/stop-scenario.ts";
import { drainTakeHome, takeHomeEnv, useLocalStackFixture } from "../helpers/take-home.ts";

/** A current LocalStack (2026.3.0): JSON and Query protocols, and a KMS. */
const skip = localStackSkipReason("2026.3.0");
const fx = useLocalStackFixture("2026.3.0", skip);

test("the README's take-home commands drain a current LocalStack as written: the JSON protocol is detected", { skip }, async () => {
  await drainTakeHome(fx, { seed: 301, expectProtocol: "json" });
});

test("a graceful stop strands nothing on LocalStack: a drain right after finds every message", { skip }, async () => {
  await fx.reset();
  const queueUrl = await fx.createQueue("login-queue-stop");
  await stopStrandsNothing({ db: fx.db, client: fx.sqs, queueUrl, env: takeHomeEnv(queueUrl, fx.pgdb.url), seed: 302 });
});

test("back-to-back drains on LocalStack leave nothing behind: the next drain finds every message at once", { skip }, async () => {
  await fx.reset();
  const queueUrl = await fx.createQueue("login-queue-drains");
  await backToBackDrains({ db: fx.db, client: fx.sqs, queueUrl, env: takeHomeEnv(queueUrl, fx.pgdb.url), seed: 303 });
});

test("the KMS provider against LocalStack's KMS: keys wrapped by KMS, values recovered by unmask", { skip }, async () => {
  // A database of its own: the others' keys are wrapped under the local master key.
  const pgdb = await createTestDatabase();
  const db = createDb({ databaseUrl: pgdb.url });
  await prepareDatabase(db, TABLE, { migrate: true, logger: createLogger("silent") });
  const kms = new KMSClient({ region: "us-east-1", endpoint: fx.ls.endpoint, credentials: TEST_CREDENTIALS });
  try {
    const key = (await kms.send(new CreateKeyCommand({ Description: "masq" }))).KeyMetadata!;
    await kms.send(new CreateAliasCommand({ AliasName: "alias/masq-ls", TargetKeyId: key.KeyId }));
    const queueUrl = await fx.createQueue("login-queue-kms");
    const env: NodeJS.ProcessEnv = {
      ...takeHomeEnv(queueUrl, pgdb.url),
      MASQ_KMS_KEY_ID: "alias/masq-ls",
      AWS_ENDPOINT_URL_KMS: fx.ls.endpoint,
      AWS_ENDPOINT_URL_STS: fx.ls.endpoint,
    };
    delete env.MASQ_MASTER_KEY;
    const events = uniqueEvents(300, 303, 0);
    await sendBodies(fx.sqs, queueUrl, events.map((e) => e.body));
    const run = spawnMasq(["run", "--drain"], env);
    assert.equal((await run.exited).code, 0, run.lines.slice(-10).join("\n"));
    const keys = await db.pool.query<{ what: string; provider: string; master_key_id: string }>(
      `SELECT 'data' AS what, provider, master_key_id FROM masq.data_keys
       UNION ALL SELECT 'pseudonym', provider, master_key_id FROM masq.pseudonym_keys ORDER BY 1`,
    );
    assert.deepEqual(keys.rows, [
      { what: "data", provider: "kms", master_key_id: key.Arn },
      { what: "pseudonym", provider: "kms", master_key_id: key.Arn },
    ]);
    const rows = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM public.user_logins");
    assert.equal(rows.rows[0]!.n, events.length);

    const first = JSON.parse(events[0]!.body) as { user_id: string; device_id: string; ip: string };
    const unmask = spawnMasq(["unmask", "--reason", "localstack kms test", "--user-id", first.user_id, "--format", "json"], { ...env, MASQ_LOG_LEVEL: "silent" });
    assert.equal((await unmask.exited).code, 0, unmask.lines.join("\n"));
    const values = JSON.parse(unmask.lines.join("\n")) as { kind: string; value: string }[];
    assert.deepEqual(values.map((v) => [v.kind, v.value]).sort(), [["device_id", first.device_id], ["ip", first.ip]]);
  } finally {
    kms.destroy();
    await db.close();
    await pgdb.close();
  }
});
