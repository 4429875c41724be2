import assert from "node:assert/strict";
import { test } from "node:test";
import { freePort } from "../../src/ops/demo.ts";
import { localStackSkipReason } from "../helpers/localstack.ts";
import { waitFor } from "../helpers/pipeline.ts";
import { spawnMasq } from "../helpers/masq-process.ts";
import { drainTakeHome, takeHomeEnv, useLocalStackFixture } from "../helpers/take-home.ts";

/**
 * LocalStack 2.3.2: Query protocol only, like the take-home image (older than LocalStack 3.0). It answers a JSON
 * request with HTTP 500 and an XML `Missing Action` error, which masq once took for an outage and waited on forever.
 */
const skip = localStackSkipReason("2.3.2");
const fx = useLocalStackFixture("2.3.2", skip);

test("the README's take-home commands drain LocalStack 2.3.2 as written: the Query protocol is detected", { skip }, async () => {
  await drainTakeHome(fx, { seed: 201, expectProtocol: "query" });
});

test("MASQ_SQS_PROTOCOL=json against LocalStack 2.3.2 exits 2 at once naming the setting, though the refusal is an HTTP 500", { skip }, async () => {
  const queueUrl = await fx.createQueue("login-queue-forced");
  for (const command of [["run", "--drain"], ["status"]]) {
    const proc = spawnMasq(command, { ...takeHomeEnv(queueUrl, fx.pgdb.url), MASQ_SQS_PROTOCOL: "json" });
    const { code } = await proc.exited;
    assert.equal(code, 2, proc.lines.join("\n"));
    assert.ok(proc.lines.some((l) => /MASQ_SQS_PROTOCOL.*set MASQ_SQS_PROTOCOL=query/.test(l)), proc.lines.join("\n"));
    assert.ok(!proc.lines.some((l) => l.includes("waiting")), "not retried as an outage");
  }
});

test("a queue that does not exist on LocalStack 2.3.2: exit 2 at once naming QUEUE_URL", { skip }, async () => {
  const proc = spawnMasq(["run", "--drain"], takeHomeEnv(fx.ls.queueUrl("no-such-queue"), fx.pgdb.url));
  const { code } = await proc.exited;
  assert.equal(code, 2, proc.lines.join("\n"));
  assert.ok(proc.lines.some((l) => l.startsWith("masq: ") && l.includes("QUEUE_URL") && l.includes("no such queue")), proc.lines.join("\n"));
});

test("masq run as a service on LocalStack 2.3.2: /readyz says ready once the Query protocol is found, and SIGTERM exits 0", { skip }, async () => {
  const queueUrl = await fx.createQueue("login-queue-service");
  const port = await freePort();
  const proc = spawnMasq(["run"], { ...takeHomeEnv(queueUrl, fx.pgdb.url), MASQ_HTTP_PORT: String(port), MASQ_HTTP_HOST: "127.0.0.1", MASQ_WAIT_TIME_SECONDS: "2" });
  try {
    await waitFor(
      async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200,
      60_000,
      `/readyz to answer 200:\n${proc.lines.slice(-5).join("\n")}`,
    );
    const ready = (await (await fetch(`http://127.0.0.1:${port}/readyz`)).json()) as { checks: { sqs: { ok: boolean } } };
    assert.equal(ready.checks.sqs.ok, true);
  } finally {
    proc.child.kill("SIGTERM");
  }
  assert.equal((await proc.exited).code, 0, proc.lines.slice(-10).join("\n"));
});
