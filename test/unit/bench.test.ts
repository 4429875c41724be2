import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { Sha256 } from "@aws-crypto/sha256-js";
import { CHART_DIR, chartSource, readSource, renderCharts, ROOT, type Source } from "../../scripts/bench/charts.ts";
import { describe, test } from "node:test";
import { DOCKERFILE, parseImageNodeOptions } from "../../scripts/bench/image-options.ts";
import { readOptions } from "../../scripts/bench/options.ts";
import { category, profileThread, summariseProfile, type Profile } from "../../scripts/bench/profile-top.ts";
import { judgeTargets, type Measured } from "../../scripts/bench/targets.ts";
import { plainRow } from "../../scripts/bench/plain-consumer.ts";
import { parseProcessUsage, threadCpuPerMessage } from "../../scripts/bench/usage.ts";
import { signedHeaders, signingKey } from "../../scripts/bench/wire-source.ts";

/** The pure parts of the benchmark (scripts/bench): what it reads from masq, the Dockerfile and profiles, and how it judges. */

describe("masq's usage line", () => {
  test("an older masq reports totals only: no threads", () => {
    const u = parseProcessUsage({ level: "info", msg: "process usage", cpuUserMs: 14_400, cpuSystemMs: 2_000, maxRssMb: 262 });
    assert.deepEqual(u, { cpuUserMs: 14_400, cpuSystemMs: 2_000, maxRssMb: 262, threads: null });
    assert.equal(threadCpuPerMessage(u, 100_000), null);
  });

  test("a masq with worker threads reports each; the rest of the process total is 'other'", () => {
    const u = parseProcessUsage({
      msg: "process usage",
      cpuUserMs: 9_000,
      cpuSystemMs: 2_000,
      maxRssMb: 180,
      threads: [
        { name: "main", cpuUserUs: 5_000_000, cpuSystemUs: 1_000_000 },
        { name: "prepare-1", cpuUserUs: 3_000_000, cpuSystemUs: 500_000 },
      ],
    });
    assert.deepEqual(threadCpuPerMessage(u, 100_000), [
      { name: "main", cpuUsPerMessage: 60 },
      { name: "prepare-1", cpuUsPerMessage: 35 },
      { name: "other", cpuUsPerMessage: 15 },
    ]);
  });

  test("no 'other' when the named threads account for the total (within the totals' rounding)", () => {
    const u = parseProcessUsage({ cpuUserMs: 1, cpuSystemMs: 0, maxRssMb: 1, threads: [{ name: "main", cpuUserUs: 600, cpuSystemUs: 0 }] });
    assert.deepEqual(threadCpuPerMessage(u, 1), [{ name: "main", cpuUsPerMessage: 600 }]);
  });

  for (const [what, line] of [
    ["a missing total", { cpuUserMs: 1, maxRssMb: 1 }],
    ["a total that is text", { cpuUserMs: "1", cpuSystemMs: 0, maxRssMb: 1 }],
    ["threads that are not a list", { cpuUserMs: 1, cpuSystemMs: 0, maxRssMb: 1, threads: {} }],
    ["a thread without a name", { cpuUserMs: 1, cpuSystemMs: 0, maxRssMb: 1, threads: [{ cpuUserUs: 1, cpuSystemUs: 1 }] }],
    ["a thread without CPU time", { cpuUserMs: 1, cpuSystemMs: 0, maxRssMb: 1, threads: [{ name: "main", cpuUserUs: 1 }] }],
  ] as const) {
    test(`a usage line with ${what} is refused, not read as zero`, () => {
      assert.throws(() => parseProcessUsage(line), /process usage/);
    });
  }
});

describe("the container image's Node options", () => {
  test("this checkout's Dockerfile: its NODE_OPTIONS and entry script", () => {
    const image = parseImageNodeOptions(readFileSync(DOCKERFILE, "utf8"));
    assert.match(image.nodeOptions, /--max-semi-space-size=\d+/);
    assert.notEqual(image.script, null);
  });

  test("the last ENV of the final stage wins, continuations and quotes are read, and node flags of the ENTRYPOINT are added", () => {
    const dockerfile = [
      "FROM node:24 AS build",
      "ENV NODE_OPTIONS=--build-only",
      "FROM node:24-slim",
      "# ENV NODE_OPTIONS=--commented-out",
      "ENV NODE_ENV=production \\",
      '    NODE_OPTIONS="--max-semi-space-size=8 --max-old-space-size=128" \\',
      "    MASQ_HTTP_PORT=8717",
      'ENTRYPOINT ["node", "--enable-source-maps", "dist/bin/masq.js"]',
      'CMD ["run"]',
    ].join("\n");
    assert.deepEqual(parseImageNodeOptions(dockerfile), { nodeOptions: "--max-semi-space-size=8 --max-old-space-size=128 --enable-source-maps", script: "dist/bin/masq.js" });
  });

  test("no NODE_OPTIONS and no node ENTRYPOINT: empty options, no script", () => {
    assert.deepEqual(parseImageNodeOptions('FROM x\nENV A=1\nENTRYPOINT ["/masq"]\n'), { nodeOptions: "", script: null });
    assert.deepEqual(parseImageNodeOptions("FROM x\nENV NODE_OPTIONS --legacy-form\nENTRYPOINT node bin/masq\n"), { nodeOptions: "--legacy-form", script: "bin/masq" });
  });
});

describe("profile summaries", () => {
  test("packages and files fall into the levers the report names", () => {
    const cases: [string, string][] = [
      ["@aws-sdk/client-sqs", "aws-sdk"],
      ["@smithy/core", "aws-sdk"],
      ["@aws-crypto/sha256-js", "aws-sdk"],
      ["pg", "pg"],
      ["pg-protocol", "pg"],
      ["pino", "pino"],
      ["sonic-boom", "pino"],
      ["(garbage collector)", "GC"],
      ["(idle)", "idle"],
      ["src/ingest/runner.ts", "masq"],
      ["wasm://wasm/00ad0bc6", "wasm"],
      ["node internals", "node internals"],
      ["@noble/hashes", "@noble/hashes"],
    ];
    for (const [group, expected] of cases) assert.equal(category(group), expected, group);
  });

  test("self time per category adds up to the whole, and each function carries its category", () => {
    const frame = (id: number, functionName: string, url: string) => ({ id, callFrame: { functionName, url, lineNumber: 0 } });
    const profile: Profile = {
      nodes: [
        frame(1, "(root)", ""),
        frame(2, "(idle)", ""),
        frame(3, "send", "file:///app/node_modules/@smithy/core/dist-cjs/index.js"),
        frame(4, "handleRetry", "file:///app/node_modules/@aws-sdk/middleware-retry/index.js"),
        frame(5, "writeBatch", "file:///app/src/ingest/write-batch.ts"),
        frame(6, "(garbage collector)", ""),
        frame(7, "parseRow", "file:///app/node_modules/pg/lib/result.js"),
      ],
      samples: [2, 3, 3, 4, 5, 6, 7, 2, 2, 2],
      timeDeltas: [1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000],
    };
    const s = summariseProfile(profile, 3);
    assert.equal(s.totalMs, 10);
    assert.deepEqual(
      s.categories.map((c) => [c.name, c.share]),
      [
        ["idle", 0.4],
        ["aws-sdk", 0.3],
        ["GC", 0.1],
        ["masq", 0.1],
        ["pg", 0.1],
      ],
    );
    assert.ok(s.groups.some((g) => g.name === "src/ingest/write-batch.ts"), "masq's files stay apart in the groups");
    assert.equal(s.functions.length, 3);
    assert.deepEqual(s.functions[1], { name: "send @smithy/core/dist-cjs/index.js:1", share: 0.2, ms: 2, category: "aws-sdk" });
  });

  test("Node's default profile names say which thread wrote them", () => {
    assert.deepEqual(profileThread("/x/CPU.20261201.123109.7183.0.001.cpuprofile"), { pid: 7183, threadId: 0, thread: "main" });
    assert.deepEqual(profileThread("/x/CPU.20261201.123109.7183.2.003.cpuprofile"), { pid: 7183, threadId: 2, thread: "worker 2" });
    assert.deepEqual(profileThread("/x/sqs-ceiling-99.cpuprofile"), { pid: null, threadId: null, thread: "sqs-ceiling-99" });
  });
});

describe("the targets", () => {
  const ok = { ok: true, problems: [] };
  const masq = (o: Record<string, unknown> = {}) => ({
    perSecond: 9_000,
    wallSeconds: 2,
    wallPerSecond: 2_500,
    cpuUsPerMessage: 105,
    threads: [{ name: "main", cpuUsPerMessage: 70 }, { name: "prepare-1", cpuUsPerMessage: 35 }],
    maxRssMb: 180,
    startupSeconds: 0.14,
    tailSeconds: 0.45,
    drainDetectSeconds: 0.3,
    verification: ok,
    ...o,
  });
  const main = (o: Record<string, unknown> = {}) => ({
    messages: 100_000,
    receivers: 8,
    ratio: 0.92,
    ok: true,
    masq: masq(),
    sqsCeiling: { perSecond: 10_000 },
    pgCeiling: { perSecond: 50_000 },
    runs: [{ disturbed: false }],
    steadyLag: { rate: 4_500, messages: 45_000, lagP50Ms: 80, lagP99Ms: 140, lagMaxMs: 300, verification: ok },
    ...o,
  });
  const latencyPoint = (receivers: number, ratio: number) => ({ receivers, ratio, masq: masq({ perSecond: receivers * 440 }) });
  const sweep = (ratios: number[], ms = 20) => ({ latencyMs: ms, ok: true, points: ratios.map((r, i) => latencyPoint(2 ** i, r)) });
  const drain = (o: Record<string, unknown> = {}) => ({ messages: 5_000, ratio: 0.65, masqOverPlain: 1.6, plainConsumer: { wallSeconds: 3.2 }, ok: true, masq: masq(), sqsCeiling: { perSecond: 4_000 }, runs: [{ disturbed: false }], ...o });
  const all = (o: Partial<Record<keyof Measured, unknown>> = {}): Measured =>
    ({
      main: [main()],
      latency: sweep([1, 0.99, 0.95, 0.93, 0.92, 0.91]),
      scaling: { asImage: false, masqNodeOptions: "", imageNodeOptions: "--max-semi-space-size=8", masqScript: "bin/masq", points: [{ messages: 1_000_000, masq: masq({ maxRssMb: 190 }) }] },
      drainStartup: drain(),
      ...o,
    }) as unknown as Measured;
  const verdicts = (m: Measured) => judgeTargets(m).map((t) => [t.goal, t.value === null ? null : Math.round(t.value * 100) / 100, t.met]);

  test("all eight measured and met", () => {
    assert.deepEqual(verdicts(all()), [
      ["≤ 120", 105, true],
      ["≥ 0.85", 0.92, true],
      ["≥ 1.5", 1.6, true],
      ["≤ 150 ms", 140, true],
      ["≤ 500 ms", 450, true],
      ["< 200 MB", 190, true],
      ["≥ 0.9 at each", 0.91, true],
      ["< 150 ms", 140, true],
    ]);
  });

  test("each misses its goal on the other side of it", () => {
    const m = all({
      main: [main({ ratio: 0.64, masq: masq({ cpuUsPerMessage: 185 }), steadyLag: { rate: 3_500, messages: 35_000, lagP50Ms: 172, lagP99Ms: 226, lagMaxMs: 372, verification: ok } })],
      latency: sweep([1, 1, 1, 1, 0.51, 0.95]),
      scaling: { asImage: false, masqNodeOptions: "", imageNodeOptions: "", masqScript: "bin/masq", points: [{ messages: 1_000_000, masq: masq({ maxRssMb: 511 }) }] },
      drainStartup: drain({ masqOverPlain: 0.7, masq: masq({ startupSeconds: 0.328, tailSeconds: 1.17 }) }),
    });
    assert.deepEqual(verdicts(m), [
      ["≤ 120", 185, false],
      ["≥ 0.85", 0.64, false],
      ["≥ 1.5", 0.7, false],
      ["≤ 150 ms", 328, false],
      ["≤ 500 ms", 1170, false],
      ["< 200 MB", 511, false],
      ["≥ 0.9 at each", 0.51, false],
      ["< 150 ms", 226, false],
    ]);
  });

  test("the steady lag is judged after its warm-up, whose p99 the detail gives; a result from before the warm-up says it had none", () => {
    const warm = { messages: 15_000, p50Ms: 90, p99Ms: 240, maxMs: 260 };
    const lag = judgeTargets(all({ main: [main({ steadyLag: { rate: 5_000, messages: 50_000, lagP50Ms: 40, lagP99Ms: 95, lagMaxMs: 120, warmup: warm, verification: ok } })] }))[7]!;
    assert.deepEqual([lag.value, lag.met], [95, true]);
    assert.match(lag.detail, /after a warm-up of 15,000 \(its p99 240 ms\)/);
    assert.match(judgeTargets(all())[7]!.detail, /after no warm-up/);
  });

  test("a run of another size than the targets are stated at is judged, and says so", () => {
    const [, ratio] = judgeTargets(all({ main: [main({ messages: 3_000 })] }));
    assert.equal(ratio!.met, true);
    assert.match(ratio!.detail, /measured at 3,000 messages; the target is stated at 100,000/);
    assert.doesNotMatch(judgeTargets(all())[1]!.detail, /stated at/);
  });

  test("an incorrect run meets no target, however fast", () => {
    assert.equal(judgeTargets(all({ main: [main({ ok: false })] }))[1]!.met, false);
    assert.equal(judgeTargets(all({ drainStartup: drain({ ok: false }) }))[2]!.met, false);
  });

  test("what the run did not measure is 'not measured', with the reason", () => {
    const targets = judgeTargets({ main: [], latency: null, scaling: null, drainStartup: null });
    assert.deepEqual(
      targets.map((t) => t.met),
      [null, null, null, null, null, null, null, null],
    );
    for (const t of targets) assert.notEqual(t.detail, "");
    const older = judgeTargets(all({ drainStartup: drain({ masqOverPlain: undefined, plainConsumer: undefined }) }))[2]!;
    assert.deepEqual([older.met, older.detail], [null, "this run has no sqs-consumer phase"]);
  });

  test("memory with user-set Node options, latency at another delay or without every receivers count: not measured", () => {
    const m = all({
      scaling: { asImage: true, masqNodeOptions: "--max-semi-space-size=8 --max-old-space-size=384", imageNodeOptions: "--max-semi-space-size=8 --max-old-space-size=384", masqScript: "dist/", points: [{ messages: 1_000_000, masq: masq({ maxRssMb: 150 }) }] },
      latency: sweep([1, 1, 1, 1, 1, 1], 5),
    });
    const [, , , , , rss, linear] = judgeTargets(m);
    assert.equal(rss!.met, null);
    assert.match(rss!.detail, /--node-options=/);
    assert.equal(linear!.met, null);
    const upTo16 = judgeTargets(all({ latency: sweep([1, 1, 1, 1, 1]) }))[6]!;
    assert.deepEqual([upTo16.met, upTo16.detail], [null, "receivers 1, 2, 4, 8, 16 measured; the target needs 32 too"]);
  });
});

describe("options", () => {
  test("--full includes the drain start-up phase, the Postgres statement cost and latency at 16 and 32 receivers", () => {
    const o = readOptions(["--full"])!;
    assert.equal(o.main, true);
    assert.equal(o.drainMessages, 5000);
    assert.equal(o.pgCostMessages, 20_000);
    assert.equal(o.latencyMs, 20);
    assert.deepEqual(o.latencyReceivers, [1, 2, 4, 8, 16, 32]);
  });

  test("--drain-only runs the drain start-up phase alone", () => {
    const o = readOptions(["--drain-only", "--repeat", "5"])!;
    assert.equal(o.main, false);
    assert.equal(o.drainOnly, true);
    assert.equal(o.drainMessages, 5000);
    assert.equal(o.repeat, 5);
    assert.equal(readOptions([])!.drainOnly, false);
  });

  test("--profile runs the main comparison and profiles under bench/profiles", () => {
    const o = readOptions(["--profile"])!;
    assert.equal(o.main, true);
    assert.equal(o.profile, "bench/profiles");
    assert.equal(readOptions([])!.profile, undefined);
  });
});

describe("the Postgres statement cost option", () => {
  test("off by default; on its own it runs instead of the main comparison; the smoke run keeps it small", () => {
    assert.equal(readOptions([])!.pgCostMessages, 0);
    const alone = readOptions(["--pg-cost"])!;
    assert.deepEqual([alone.main, alone.pgCostMessages], [false, 20_000]);
    assert.deepEqual([readOptions(["--pg-cost", "--main"])!.main, readOptions(["--pg-cost-messages", "5000"])!.pgCostMessages], [true, 5000]);
    assert.equal(readOptions(["--smoke"])!.pgCostMessages, 2000);
  });
});

describe("the sqs-consumer + pg consumer's rows", () => {
  test("a JSON object becomes a row of its fields as text; anything else is skipped", () => {
    assert.deepEqual(plainRow("m1", JSON.stringify({ user_id: "u", device_type: "ios", ip: "10.0.0.1", device_id: "d", locale: null, app_version: 7, create_date: "2026-12-06" })), [
      "m1",
      "u",
      "ios",
      "10.0.0.1",
      "d",
      null,
      "7",
      "2026-12-06",
    ]);
    assert.deepEqual(plainRow("m2", "{}"), ["m2", null, null, null, null, null, null, null]);
    for (const body of ["not json", "[1,2]", "null", "42", '"text"']) assert.equal(plainRow("m", body), null, body);
  });
});

describe("the wire floor's SigV4", () => {
  test("signs an AWS JSON request exactly as the SDK's SignatureV4 does", async () => {
    const credentials = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" };
    const body = JSON.stringify({ QueueUrl: "http://127.0.0.1:4566/000000000000/q", MaxNumberOfMessages: 10 });
    const amzDate = "20261206T181500Z";
    const ours = signedHeaders({ host: "127.0.0.1:4566", region: "eu-west-1", accessKeyId: credentials.accessKeyId, key: signingKey(credentials.secretAccessKey, "20261206", "eu-west-1"), amzDate, target: "AmazonSQS.ReceiveMessage", body });
    const sdk = new SignatureV4({ credentials, region: "eu-west-1", service: "sqs", sha256: Sha256 });
    const signed = await sdk.sign(
      new HttpRequest({
        method: "POST",
        protocol: "http:",
        hostname: "127.0.0.1",
        port: 4566,
        path: "/",
        headers: { "content-type": ours["content-type"]!, host: "127.0.0.1:4566", "x-amz-target": "AmazonSQS.ReceiveMessage" },
        body,
      }),
      { signingDate: new Date("2026-12-06T18:15:00Z") },
    );
    assert.equal(ours.authorization, signed.headers.authorization);
  });
});

describe("the charts in docs/", () => {
  const dir = path.join(ROOT, CHART_DIR);
  const files = readdirSync(dir).filter((f) => f.endsWith(".svg"));

  test("there are charts, and docs/benchmark.md shows each", () => {
    assert.ok(files.length >= 2, `charts in ${CHART_DIR}: ${files.join(", ")}`);
    const doc = readFileSync(path.join(ROOT, "docs/benchmark.md"), "utf8");
    for (const f of files) assert.ok(doc.includes(`](benchmark/${f})`), `docs/benchmark.md does not show ${f}`);
  });

  for (const f of files) {
    test(`${f} is what scripts/bench/charts.ts draws from the result file it names`, () => {
      const svg = readFileSync(path.join(dir, f), "utf8");
      const source = chartSource(svg);
      assert.ok(source !== null, `${f} names no result file`);
      const chart = renderCharts([readSource(path.join(ROOT, source))]).charts.find((c) => c.name === f);
      assert.ok(chart, `${source} no longer gives ${f}`);
      assert.equal(svg, chart.svg, `${f} is out of step with ${source}: run node scripts/bench/charts.ts ${source}`);
    });
  }

  const report = (startedAt: string, extra: object) => ({ startedAt, git: null, ...extra }) as Source["report"];
  const phase = (perSecond: number, cpu: number) => ({ perSecond, cpuUsPerMessage: cpu, sqsServerCpuUsPerMessage: 10, postgresCpuUsPerMessage: null });

  test("a chart whose data no file holds is not drawn, and is named as missing", () => {
    const r = renderCharts([{ file: "a.json", report: report("2026-12-06T00:00:00Z", {}) }]);
    assert.deepEqual([r.charts.length, r.missing], [0, ["cpu", "latency", "rss"]]);
  });

  test("each chart comes from the newest file that holds its data; RSS over time from a 1M point's samples", () => {
    const older = report("2026-12-01T00:00:00Z", {
      latency: { latencyMs: 20, points: [1, 2].map((r) => ({ receivers: r, sqsCeiling: phase(400 * r, 100), masq: { ...phase(390 * r, 150), threads: null, maxRssMb: 1 } })) },
      scaling: { masqNodeOptions: "--max-old-space-size=384", points: [{ messages: 1_000_000, masq: { ...phase(1, 1), threads: null, maxRssMb: 190, rssSamples: [[0.5, 60], [1, 150], [1.5, 190]] } }] },
    });
    const newer = report("2026-12-06T00:00:00Z", {
      latency: null,
      main: [{ messages: 100, sqsCeiling: phase(1000, 100), wireFloor: { ...phase(3000, 30), mainThreadCpuUsPerMessage: 20 }, masq: { ...phase(800, 150), threads: [{ name: "main", cpuUsPerMessage: 150 }], maxRssMb: 1 } }],
    });
    const r = renderCharts([{ file: "old.json", report: older }, { file: "new.json", report: newer }]);
    assert.deepEqual(r.missing, []);
    assert.deepEqual(r.charts.map((c) => [c.name, c.source]), [["cpu-per-message.svg", "new.json"], ["latency-20ms.svg", "old.json"], ["rss-1m.svg", "old.json"]]);
    const cpu = r.charts[0]!.svg;
    assert.match(cpu, /wire floor \(no SDK\)/);
    assert.match(cpu, /main thread: 20 µs/);
    assert.match(r.charts[2]!.svg, /peak 190 MB/);
    assert.equal(chartSource(cpu), "new.json");
  });
});
