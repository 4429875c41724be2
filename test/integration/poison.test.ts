import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SendMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { sendBodies } from "../../src/ops/demo.ts";
import { prepareOutcome } from "../../src/ingest/prepare.ts";
import { commitBatch } from "../../src/ingest/commit-batch.ts";
import { prepareDatabase } from "../../src/db/prepare-database.ts";
import { createLogger } from "../../src/log.ts";
import { createDb, type Db } from "../../src/db/pool.ts";
import { MAX_REDACTED_CHARS } from "../../src/ingest/quarantine-body.ts";
import { rotatePseudonymKey } from "../../src/lifecycle/rotate-pseudonym-key.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { createTestDatabase } from "../helpers/postgres.ts";
import { captureLogger, makeRunner, TABLE, TEST_MASTER_KEY, tableCounts, testKeys, uniqueEvents, waitFor } from "../helpers/pipeline.ts";
import { amplifyingBody, RED_TEAM_BODIES } from "../helpers/red-team.ts";
import { readImageNodeOptions } from "../../scripts/bench/image-options.ts";

/**
 * Issue 9 § 1 and § 2 against real Postgres and fauxqs: the hostile bodies that stalled masq (redaction amplified
 * them past V8's string limit inside one statement, and node-postgres's RangeError was taken for an outage) and the
 * red-team corpus of PII spellings the old redaction kept in clear.
 */
const fx = usePipelineFixture();

/** Large bodies one per call: a SendMessageBatch of ten 1 MiB bodies would pass SQS's limit for the whole request. */
async function sendLarge(client: SQSClient, queueUrl: string, bodies: readonly string[]): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < bodies.length) await client.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: bodies[next++]! }));
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

function validBodies(n: number, seed: number): string[] {
  return uniqueEvents(n * 2, seed, 0)
    .slice(0, n)
    .map((e) => e.body);
}

function httpPort(lines: string[]): number | undefined {
  for (const l of lines) if (l.includes("HTTP listener")) return (JSON.parse(l) as { port: number }).port;
  return undefined;
}

interface StoredQuarantine {
  message_id: string;
  reason: string;
  detail: string;
  body: string | null;
  body_length: number;
  ciphertext_length: number | null;
}

async function quarantineRows(db: Db = fx.db): Promise<StoredQuarantine[]> {
  const r = await db.pool.query<StoredQuarantine>(
    "SELECT message_id, reason, detail, body, body_length, octet_length(body_ciphertext) AS ciphertext_length FROM masq.quarantine ORDER BY message_id",
  );
  return r.rows;
}

describe("hostile bodies", () => {
  test('60 bodies of ~1 MiB of "1:: " among valid ones: /healthz answers throughout, the poison is quarantined whole, every valid message commits', async () => {
    await fx.reset();
    const valid = validBodies(400, 91);
    const hostile = Array.from({ length: 60 }, (_, i) => amplifyingBody("colons", 1_040_000, `v6-${i}`));
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, valid.slice(0, 200));
    await sendLarge(fx.sqs.client, queueUrl, hostile);
    await sendBodies(fx.sqs.client, queueUrl, valid.slice(200));

    // masq's defaults otherwise: a process of its own, so that its event loop is the one /healthz measures.
    const proc = spawnMasq(["run", "--drain"], masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url }));
    let probes = 0;
    const unanswered: string[] = [];
    try {
      await waitFor(() => httpPort(proc.lines) !== undefined || proc.child.exitCode !== null, 30_000, "the HTTP listener");
      const base = `http://127.0.0.1:${httpPort(proc.lines)}`;
      let exited = false;
      void proc.exited.then(() => (exited = true));
      while (!exited) {
        // A liveness probe's deadline (Kubernetes' default is 1 s; generous here for a loaded test machine), not a
        // measure of speed: before the fix the loop was blocked for minutes and every probe failed.
        try {
          const res = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(5_000) });
          if (res.status === 200) probes++;
          else unanswered.push(`status ${res.status}`);
        } catch (err) {
          // Once the pipeline has stopped, masq closes its listener and exits: a refused probe then is no failure.
          const stopped = proc.lines.some((l) => l.includes("pipeline stopped"));
          const code = (err as { cause?: { code?: unknown } }).cause?.code;
          if (!exited && !stopped) unanswered.push(`${(err as Error).name}: ${typeof code === "string" ? code : (err as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      const { code } = await proc.exited;
      assert.equal(code, 0, proc.lines.slice(-5).join("\n"));
    } finally {
      proc.child.kill("SIGKILL");
    }
    assert.deepEqual(unanswered, [], "every /healthz probe was answered");
    assert.ok(probes > 0);
    assert.ok(!proc.lines.some((l) => l.includes("Postgres unreachable")), "a poison batch is not an outage");

    const c = await tableCounts(fx.db);
    assert.equal(c.rows, valid.length);
    assert.deepEqual(c.quarantine, { missing_field: hostile.length });
    for (const q of await quarantineRows()) {
      assert.ok(q.body !== null && q.body.length <= MAX_REDACTED_CHARS, `${q.body?.length} characters`);
      assert.match(q.body, /"user_id":"v6-\d+"/);
      assert.ok(q.body_length > 1_000_000);
      // The original is kept whole, encrypted (AES-GCM adds its 16-byte tag).
      assert.equal(q.ciphertext_length, q.body_length + 16);
    }
  });

  test('150 × 256 KiB of "1:: " and 300 × 256 KiB of "1.1.1.1.": quarantined, the valid messages around them committed, no retry', async () => {
    await fx.reset();
    const valid = validBodies(600, 92);
    const hostile = [
      ...Array.from({ length: 150 }, (_, i) => amplifyingBody("colons", 256 * 1024 - 64, `v6-${i}`)),
      ...Array.from({ length: 300 }, (_, i) => amplifyingBody("dots", 256 * 1024 - 64, `v4-${i}`)),
    ];
    const queueUrl = fx.sqs.newQueue();
    const mixed = hostile.flatMap((h, i) => [h, valid[i]!]).concat(valid.slice(hostile.length));
    await sendLarge(fx.sqs.client, queueUrl, mixed);

    const { logger, lines } = captureLogger("info");
    // masq's own batch sizes: a batch of 1000 bodies, several hundred of them hostile.
    const runner = await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl, logger, config: { batchSize: 1000, maxInFlight: 5000, batchWaitMs: 500 } });
    const result = await runner.run({ drain: true });
    assert.equal(result.fatal, undefined);
    assert.deepEqual(result.stats.retries, {}, lines.filter((l) => l.includes("retrying")).slice(0, 3).join("\n"));
    const c = await tableCounts(fx.db);
    assert.equal(c.rows, valid.length);
    assert.deepEqual(c.quarantine, { missing_field: hostile.length });
    for (const q of await quarantineRows()) {
      assert.ok(q.body !== null && q.body.length <= MAX_REDACTED_CHARS);
      assert.equal(q.ciphertext_length, q.body_length + 16);
    }
  });

  test("masq rotate pseudonym-key re-redacts such quarantined bodies from their originals", async () => {
    await fx.reset();
    const hostile = [
      ...Array.from({ length: 30 }, (_, i) => amplifyingBody("colons", 1_040_000, `r6-${i}`)),
      ...Array.from({ length: 60 }, (_, i) => amplifyingBody("dots", 256 * 1024 - 64, `r4-${i}`)),
      ...RED_TEAM_BODIES.map((b) => b.body),
    ];
    const queueUrl = fx.sqs.newQueue();
    await sendLarge(fx.sqs.client, queueUrl, hostile);
    // A database of its own: rotation needs the pseudonym key masq manages, not the tests' key given from outside.
    const pgdb = await createTestDatabase();
    const db = createDb({ databaseUrl: pgdb.url });
    try {
      await prepareDatabase(db, TABLE, { migrate: true, logger: createLogger("silent") });
      const keys = await testKeys(db, { pseudonymKey: null });
      try {
        const r = await (await makeRunner({ db, sqs: fx.sqs.client, queueUrl, keys })).run({ drain: true });
        assert.equal(r.fatal, undefined);
      } finally {
        keys.close();
      }
      // Three records as an older masq stored them, its redaction having amplified them to megabytes; one of them
      // without its original (kept originals came with the vault).
      const legacy = (await db.pool.query<{ message_id: string }>("SELECT message_id FROM masq.quarantine WHERE body_length > 1000000 ORDER BY message_id LIMIT 3")).rows.map((r) => r.message_id);
      await db.pool.query(`UPDATE masq.quarantine SET body = repeat('"hmac:' || repeat('a', 64) || '" ', 70000) WHERE message_id = ANY($1)`, [legacy]);
      await db.pool.query("UPDATE masq.quarantine SET body_data_key_id = NULL, body_nonce = NULL, body_ciphertext = NULL WHERE message_id = $1", [legacy[0]]);
      const before = new Map((await quarantineRows(db)).map((q) => [q.message_id, q.body]));
      assert.equal(before.size, hostile.length);

      const rotated = await rotatePseudonymKey({ pool: db.pool, provider: new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY)), table: TABLE, batchSize: 1000, resume: false });
      assert.equal(rotated.outcome, "finished");
      const after = await quarantineRows(db);
      let changed = 0;
      for (const q of after) {
        assert.ok(q.body !== null && q.body.length <= MAX_REDACTED_CHARS);
        if (q.body !== before.get(q.message_id)) changed++;
      }
      // Only the red-team bodies hold pseudonyms (their top-level ip or device_id), so only they change, and the
      // legacy ones: redacted again from their originals, or (no original) reduced to their length.
      assert.equal(changed, RED_TEAM_BODIES.length + legacy.length);
      assert.equal(after.find((q) => q.message_id === legacy[0])!.body, JSON.stringify({ "[body not kept]": `${72 * 70000} characters` }));
      assert.match(after.find((q) => q.message_id === legacy[1])!.body!, /^\{"user_id":"r6-\d+","t":"\[string: \d+ chars\]"\}$/);
      const stored = after.map((q) => q.body).join("\n");
      for (const { secrets } of RED_TEAM_BODIES) for (const s of secrets) assert.ok(!stored.includes(s), `${s} in a re-redacted body`);
    } finally {
      await db.close();
      await pgdb.close();
    }
  });
});

describe("memory held", () => {
  test("1,000 bodies of 200 KB drain under --max-semi-space-size=8 --max-old-space-size=128 (MASQ_MAX_IN_FLIGHT_BYTES bounds what is held)", async () => {
    await fx.reset();
    const pad = (i: number) => "p".repeat(200_000 - 300 - String(i).length);
    // Half valid events carrying a large extra field, half rejected ones (no device_id), whose originals are kept.
    const bodies = validBodies(1000, 96).map((b, i) => {
      const e = JSON.parse(b) as Record<string, unknown>;
      if (i % 2 === 1) delete e.device_id;
      return JSON.stringify({ ...e, pad: pad(i) });
    });
    const queueUrl = fx.sqs.newQueue();
    await sendLarge(fx.sqs.client, queueUrl, bodies);
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { NODE_OPTIONS: "--max-semi-space-size=8 --max-old-space-size=128" } });
    const proc = spawnMasq(["run", "--drain"], env);
    const { code, signal } = await proc.exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, proc.lines.filter((l) => !l.startsWith("{")).slice(-8).join("\n"));
    const c = await tableCounts(fx.db);
    assert.equal(c.rows, 500);
    assert.deepEqual(c.quarantine, { missing_field: 500 });
  });

  test("the worst the in-flight caps allow drains under the container image's NODE_OPTIONS: bodies of ~1 MiB held as two-byte strings", async () => {
    await fx.reset();
    // One "€" makes V8 hold the whole body as a two-byte string: 2 bytes per UTF-8 byte, twice what
    // MASQ_MAX_IN_FLIGHT_BYTES counts. SQS's largest body, half of them rejected so that their originals are sealed.
    const pad = (i: number) => "€" + "q".repeat(1_040_000 - 300 - String(i).length);
    const bodies = validBodies(120, 97).map((b, i) => {
      const e = JSON.parse(b) as Record<string, unknown>;
      if (i % 2 === 1) delete e.device_id;
      return JSON.stringify({ ...e, pad: pad(i) });
    });
    const queueUrl = fx.sqs.newQueue();
    await sendLarge(fx.sqs.client, queueUrl, bodies);
    const { nodeOptions } = readImageNodeOptions();
    const env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { NODE_OPTIONS: nodeOptions } });
    const proc = spawnMasq(["run", "--drain"], env);
    const { code, signal } = await proc.exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, proc.lines.filter((l) => !l.startsWith("{")).slice(-8).join("\n"));
    const c = await tableCounts(fx.db);
    assert.equal(c.rows, 60);
    assert.deepEqual(c.quarantine, { missing_field: 60 });
  });
});

describe("the red-team corpus through the pipeline", () => {
  test("no PII value of any spelling reaches masq.quarantine.body, and the redacted copy still shows whose event it was", async () => {
    await fx.reset();
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, RED_TEAM_BODIES.map((b) => b.body));
    const runner = await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl });
    assert.equal((await runner.run({ drain: true })).fatal, undefined);
    const rows = await quarantineRows();
    assert.equal(rows.length, RED_TEAM_BODIES.length);
    // Everything a role that may read the quarantine (or a dump) sees, in one text.
    const all = (await fx.db.pool.query<{ t: string }>("SELECT string_agg(concat_ws(' ', message_id, reason, detail, body), E'\\n') AS t FROM masq.quarantine")).rows[0]!.t;
    for (const { name, secrets } of RED_TEAM_BODIES) {
      for (const s of secrets) {
        for (const spelling of [s, s.toLowerCase(), s.toUpperCase()]) assert.ok(!all.includes(spelling), `${name}: ${spelling} is stored in clear`);
      }
    }
    for (const q of rows) assert.equal((JSON.parse(q.body!) as { user_id: string }).user_id, "rt-user");
  });
});

describe("errors raised while encoding a statement", () => {
  test("a value node-postgres cannot encode (past V8's string limit) is quarantined alone, the rest commits, and the pool stays usable", async () => {
    await fx.reset();
    // One connection, so that the statement after the failure runs on the connection that saw it, if it were kept.
    const db = createDb({ databaseUrl: fx.pgdb.url, poolSize: 1 });
    const keys = await testKeys(db);
    try {
      const at = new Date();
      const bodies = [...validBodies(20, 93), '{"user_id":"too-big"}', ...validBodies(20, 94).slice(10)];
      const outcomes = bodies.map((body, i) => prepareOutcome({ messageId: `enc-${i}`, body, sentAt: at, receivedAt: at }, keys.pseudonym.pseudonymizer));
      const sealed = await keys.sealer.seal(outcomes, keys.pseudonym.version);
      // A quarantine record whose redacted copy is one character short of V8's string limit (2^29 - 24): node-postgres
      // cannot quote it into the array literal and throws RangeError("Invalid string length") before sending anything.
      const huge = "x".repeat(2 ** 29 - 25);
      const batch = { ...sealed, quarantine: sealed.quarantine.map((o) => ({ ...o, redactedBody: huge })) };
      const r = await commitBatch(db.pool, TABLE, batch);
      assert.deepEqual({ written: r.written, quarantined: r.quarantined, rejected: r.rejected }, { written: 30, quarantined: 1, rejected: 1 });
      const [q] = await quarantineRows();
      assert.equal(q!.message_id, "enc-20");
      assert.equal(q!.reason, "missing_field");
      assert.match(q!.detail, /body not kept: masq could not encode the statement for Postgres \(Invalid string length\)/);
      assert.equal(q!.body, null);
      assert.ok(q!.ciphertext_length !== null, "the encrypted original is kept");

      const next = validBodies(5, 95).map((body, i) => prepareOutcome({ messageId: `after-${i}`, body, sentAt: at, receivedAt: at }, keys.pseudonym.pseudonymizer));
      const r2 = await commitBatch(db.pool, TABLE, await keys.sealer.seal(next, keys.pseudonym.version));
      assert.equal(r2.written, 5);
    } finally {
      keys.close();
      await db.close();
    }
  });
});
