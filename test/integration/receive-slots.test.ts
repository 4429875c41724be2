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

describe("receives at once (MASQ_MAX_IN_FLIGHT_BYTES reserves room for each receive's ten bodies)", () => {
  test("on a queue that allows 256 KiB bodies, 32 MiB lets 12 of 16 receivers poll at once, and masq says so at start", async () => {
    await fx.reset();
    const { most, lines } = await openReceives({}, { MASQ_RECEIVERS: "16" });
    assert.equal(most, 12, lines.slice(-10).join("\n"));
    const warning = lines.find((l) => l.includes("can receive at once"));
    assert.ok(warning !== undefined, "a warning names the limit");
    assert.match(warning, /only 12 of MASQ_RECEIVERS=16 can receive at once/);
    assert.match(warning, /raise it to 40 MiB/);
  });

  test("on a queue whose MaximumMessageSize is 16 KiB, every one of 16 receivers polls, and no warning", async () => {
    await fx.reset();
    const { most, lines } = await openReceives({ MaximumMessageSize: "16384" }, { MASQ_RECEIVERS: "16" });
    assert.equal(most, 16, lines.slice(-10).join("\n"));
    assert.ok(!lines.some((l) => l.includes("can receive at once")));
  });

  test("a larger MASQ_MAX_IN_FLIGHT_BYTES lets them all poll on a 256 KiB queue", async () => {
    await fx.reset();
    const { most, lines } = await openReceives({}, { MASQ_RECEIVERS: "16", MASQ_MAX_IN_FLIGHT_BYTES: String(40 * 1024 * 1024) });
    assert.equal(most, 16, lines.slice(-10).join("\n"));
    assert.ok(!lines.some((l) => l.includes("can receive at once")));
  });
});
