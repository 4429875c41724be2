import assert from "node:assert/strict";
import { createServer, request, type Server } from "node:http";
import { after, describe, test } from "node:test";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { masqEnv, spawnMasq } from "../helpers/masq-process.ts";
import { waitFor } from "../helpers/pipeline.ts";

const fx = usePipelineFixture();

/**
 * An HTTP proxy in front of the SQS server that counts the ReceiveMessage calls open at once (JSON protocol: the
 * X-Amz-Target header names the action). Long polls on an empty queue stay open for their wait, so the most open at
 * once is how many receives masq lets run together.
 */
async function receiveCounter(target: string): Promise<{ endpoint: string; open: () => number; most: () => number; close: () => Promise<void> }> {
  const upstream = new URL(target);
  let open = 0;
  let most = 0;
  const server: Server = createServer((req, res) => {
    const receive = String(req.headers["x-amz-target"] ?? "").endsWith(".ReceiveMessage");
    if (receive) most = Math.max(most, ++open);
    const done = () => {
      if (receive) open--;
    };
    const out = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
      up.on("end", done);
    });
    out.on("error", () => {
      done();
      res.destroy();
    });
    req.pipe(out);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  if (addr === null || typeof addr !== "object") throw new Error("no port");
  return {
    endpoint: `http://127.0.0.1:${addr.port}`,
    open: () => open,
    most: () => most,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** masq as a service on an empty queue behind the counter: the most receives open at once, and masq's lines. */
async function openReceives(queueAttributes: Record<string, string>, extra: Record<string, string>): Promise<{ most: number; lines: string[] }> {
  const queueUrl = fx.sqs.newQueue(queueAttributes);
  const counter = await receiveCounter(fx.sqs.endpoint);
  after(() => counter.close());
  const env = masqEnv({ queueUrl, sqsEndpoint: counter.endpoint, databaseUrl: fx.pgdb.url, extra: { MASQ_WAIT_TIME_SECONDS: "5", ...extra } });
  const proc = spawnMasq(["run"], env);
  try {
    await waitFor(() => proc.lines.some((l) => l.includes('"msg":"pipeline started"')), 60_000, "masq to start");
    // Every receiver that may poll is polling within a moment of the start; the long polls then stay open for 5 s.
    await waitFor(() => counter.most() >= Number(extra.MASQ_RECEIVERS), 3_000, "every receiver to poll").catch(() => undefined);
    return { most: counter.most(), lines: [...proc.lines] };
  } finally {
    proc.child.kill("SIGTERM");
    await proc.exited;
  }
}

const BUDGET_32_MIB = String(32 * 1024 * 1024);

describe("receives at once (MASQ_MAX_IN_FLIGHT_BYTES reserves room for each receive's ten bodies)", () => {
  test("on a queue that allows 256 KiB bodies, a budget of 32 MiB lets 12 of 16 receivers poll at once, and masq says so at start", async () => {
    await fx.reset();
    const { most, lines } = await openReceives({}, { MASQ_RECEIVERS: "16", MASQ_MAX_IN_FLIGHT_BYTES: BUDGET_32_MIB });
    assert.equal(most, 12, lines.slice(-10).join("\n"));
    const warning = lines.find((l) => l.includes("can receive at once"));
    assert.ok(warning !== undefined, "a warning names the limit");
    assert.match(warning, /only 12 of MASQ_RECEIVERS=16 can receive at once/);
    assert.match(warning, /raise it to 48 MiB \(or unset it\)/);
  });

  test("on a queue whose MaximumMessageSize is 16 KiB, the same budget lets every one of 16 receivers poll, and no warning", async () => {
    await fx.reset();
    const { most, lines } = await openReceives({ MaximumMessageSize: "16384" }, { MASQ_RECEIVERS: "16", MASQ_MAX_IN_FLIGHT_BYTES: BUDGET_32_MIB });
    assert.equal(most, 16, lines.slice(-10).join("\n"));
    assert.ok(!lines.some((l) => l.includes("can receive at once")));
  });

  test("unset, the budget leaves room for all 32 receivers on a 256 KiB queue (88 MiB), and masq says what that may take of a 384 MB heap", async () => {
    await fx.reset();
    // As bin/masq runs as a command (the tests run `node bin/masq`, which skips its default Node options).
    const { most, lines } = await openReceives({}, { MASQ_RECEIVERS: "32", NODE_OPTIONS: "--max-semi-space-size=8 --max-old-space-size=384" });
    assert.equal(most, 32, lines.slice(-10).join("\n"));
    assert.ok(!lines.some((l) => l.includes("can receive at once")));
    // bin/masq's default Node options cap the old space at 384 MB; 88 MiB of 1 MiB two-byte bodies could need ~530.
    const heap = lines.find((l) => l.includes("may take up to about"));
    assert.ok(heap !== undefined, lines.slice(-10).join("\n"));
    assert.match(heap, /MASQ_MAX_IN_FLIGHT_BYTES \(88 MiB\) may take up to about 528 MB of heap/);
  });

  test("unset with the default 8 receivers: 32 MiB, every receiver polls, no warning", async () => {
    await fx.reset();
    const { most, lines } = await openReceives({}, { MASQ_RECEIVERS: "8" });
    assert.equal(most, 8, lines.slice(-10).join("\n"));
    assert.ok(!lines.some((l) => l.includes("can receive at once") || l.includes("may take up to about")));
  });
});
