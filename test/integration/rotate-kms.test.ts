import assert from "node:assert/strict";
import { before, test } from "node:test";
import { CreateAliasCommand, CreateKeyCommand, DisableKeyCommand, KMSClient } from "@aws-sdk/client-kms";
import { CreateQueueCommand } from "@aws-sdk/client-sqs";
import { sendBodies } from "../../src/ops/demo.ts";
import { createSqsClient } from "../../src/ingest/sqs-client.ts";
import { parseLoginEvent } from "../../src/ingest/login-event.ts";
import { KmsKeyProvider } from "../../src/keys/key-provider.ts";
import { pseudonymKeyVersion } from "../../src/keys/pseudonym-keys.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { useMotoFixture } from "../helpers/fixture.ts";
import { motoSkipReason } from "../helpers/moto.ts";
import { uniqueEvents } from "../helpers/pipeline.ts";
import { TEST_CREDENTIALS } from "../helpers/sqs.ts";
import { decryptVault, vaultBytes } from "../helpers/vault-check.ts";

/**
 * Master key rotation against moto's real KMS server: keys made under KMS key A are re-wrapped under key B by
 * ReEncrypt, the vault's ciphertext stays byte for byte, and with A disabled everything still opens under B.
 */
const skip = motoSkipReason();
const fx = useMotoFixture(skip);
before(() => {
  // The test's own KMS calls (decrypting the vault as `masq unmask` would) go through the SDK's credential chain.
  process.env.AWS_ACCESS_KEY_ID = TEST_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = TEST_CREDENTIALS.secretAccessKey;
});

test("rotate master-key on KMS: every key moves from key A to key B by ReEncrypt, no ciphertext changes, and A can be disabled", { skip }, async () => {
  const kms = new KMSClient({ region: "us-east-1", endpoint: fx.moto.endpoint, credentials: TEST_CREDENTIALS });
  const a = (await kms.send(new CreateKeyCommand({ Description: "masq A" }))).KeyMetadata!;
  const b = (await kms.send(new CreateKeyCommand({ Description: "masq B" }))).KeyMetadata!;
  await kms.send(new CreateAliasCommand({ AliasName: "alias/masq-next", TargetKeyId: b.KeyId }));

  const sqs = createSqsClient({ region: "us-east-1", endpoint: fx.moto.endpoint, credentials: TEST_CREDENTIALS });
  const queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: "login-queue-kms" }))).QueueUrl!;
  const envFor = (kmsKeyId: string) => {
    const env = masqEnv({
      queueUrl,
      sqsEndpoint: fx.moto.endpoint,
      databaseUrl: fx.pgdb.url,
      extra: { MASQ_KMS_KEY_ID: kmsKeyId, AWS_ENDPOINT_URL_KMS: fx.moto.endpoint, AWS_ENDPOINT_URL_STS: fx.moto.endpoint, MASQ_WAIT_TIME_SECONDS: "1" },
    });
    // The master key is KMS's, and the pseudonym key is the one masq keeps wrapped under it.
    delete env.MASQ_MASTER_KEY;
    delete env.MASQ_PSEUDONYM_KEY;
    return env;
  };
  const drain = async (env: NodeJS.ProcessEnv, events: ReturnType<typeof uniqueEvents>) => {
    await sendBodies(
      sqs,
      queueUrl,
      events.map((e) => e.body),
    );
    const p = spawnMasq(["run", "--drain"], env);
    assert.equal((await p.exited).code, 0, p.lines.slice(-10).join("\n"));
  };
  const mastersInUse = async () =>
    (
      await fx.db.pool.query<{ m: string }>(
        `SELECT DISTINCT master_key_id AS m FROM (SELECT master_key_id FROM masq.data_keys
         UNION ALL SELECT master_key_id FROM masq.pseudonym_keys WHERE state <> 'retired') k ORDER BY 1`,
      )
    ).rows.map((r) => r.m);
  const originals = (events: ReturnType<typeof uniqueEvents>) =>
    new Set(
      events.flatMap((e) => {
        const p = parseLoginEvent(e.body);
        return p.ok ? [`ip ${p.event.ip}`, `device_id ${p.event.deviceId}`] : [];
      }),
    );

  try {
    const events = uniqueEvents(600, 81);
    await drain(envFor(a.KeyId!), events);
    assert.deepEqual(await mastersInUse(), [a.Arn]);
    const bytes = await vaultBytes(fx.db.pool);
    assert.ok(bytes.length > 100);

    const dry = spawnMasq(["rotate", "master-key", "--dry-run"], envFor("alias/masq-next"));
    assert.equal((await dry.exited).code, 0, dry.lines.join("\n"));
    assert.ok(dry.lines.some((l) => l.startsWith("would re-wrap 1 data key(s) and 1 pseudonym key(s) under") && l.includes(b.Arn!)), dry.lines.join("\n"));

    const rotated = spawnMasq(["rotate", "master-key"], envFor("alias/masq-next"));
    assert.equal((await rotated.exited).code, 0, rotated.lines.join("\n"));
    assert.ok(rotated.lines.some((l) => l.startsWith(`re-wrapped 1 data key(s) and 1 pseudonym key(s) under ${b.Arn}, from ${a.Arn} (2)`)), rotated.lines.join("\n"));
    assert.deepEqual(await mastersInUse(), [b.Arn]);
    assert.deepEqual(await vaultBytes(fx.db.pool), bytes, "no vault ciphertext changed");

    // Key A is no longer needed: disabled, the vault still opens (as masq unmask opens it) and ingestion goes on.
    await kms.send(new DisableKeyCommand({ KeyId: a.KeyId }));
    const underB = new KmsKeyProvider({ keyId: "alias/masq-next", region: "us-east-1", endpoint: fx.moto.endpoint });
    try {
      const vault = await decryptVault(fx.db.pool, underB);
      assert.deepEqual(new Set(vault.map((v) => `${v.kind} ${v.value}`)), originals(events));
      const key = await pseudonymKeyVersion(fx.db.pool, underB, vault[0]!.keyVersion);
      for (const v of vault) assert.equal(key.pseudonymizer.pseudonymize(v.kind, v.value), v.pseudonym);
    } finally {
      underB.close();
    }
    const again = spawnMasq(["rotate", "master-key"], envFor("alias/masq-next"));
    assert.equal((await again.exited).code, 0, again.lines.join("\n"));
    assert.ok(again.lines.some((l) => l.startsWith("nothing re-wrapped")), again.lines.join("\n"));

    const more = uniqueEvents(300, 82).map((e) => ({ ...e, body: e.body.replace(/"user_id":"u-(\d+)"/, '"user_id":"b-$1"') }));
    await drain(envFor("alias/masq-next"), more);

    // A pseudonym key rotation under KMS too: new key from GenerateDataKey, vault values opened with Decrypt.
    const pk = spawnMasq(["rotate", "pseudonym-key"], envFor("alias/masq-next"));
    assert.equal((await pk.exited).code, 0, pk.lines.join("\n"));
    const rotatedKeys = new KmsKeyProvider({ keyId: "alias/masq-next", region: "us-east-1", endpoint: fx.moto.endpoint });
    try {
      const vault = await decryptVault(fx.db.pool, rotatedKeys);
      assert.deepEqual(new Set(vault.map((v) => `${v.kind} ${v.value}`)), new Set([...originals(events), ...originals(more)]));
      const key = await pseudonymKeyVersion(fx.db.pool, rotatedKeys, vault[0]!.keyVersion);
      assert.equal(key.version, 2);
      for (const v of vault) assert.equal(key.pseudonymizer.pseudonymize(v.kind, v.value), v.pseudonym);
    } finally {
      rotatedKeys.close();
    }
    assert.deepEqual(await mastersInUse(), [b.Arn]);
  } finally {
    kms.destroy();
    sqs.destroy();
  }
});
