import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { sendBodies } from "../../src/ops/demo.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { masqEnv } from "../helpers/masq-process.ts";
import { expectedCounts, uniqueEvents } from "../helpers/pipeline.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const fx = usePipelineFixture();

/**
 * The container image's layout, built as its Dockerfile builds it (no Docker engine needed): dist/ from
 * tsconfig.build.json, bin/, migrations/, contracts/ and package.json, and no src/. node_modules is linked from the checkout.
 */
let app: string;
before(() => {
  app = mkdtempSync(path.join(tmpdir(), "masq-image-"));
  execFileSync(process.execPath, [path.join(ROOT, "node_modules/typescript/bin/tsc"), "-p", path.join(ROOT, "tsconfig.build.json"), "--outDir", path.join(app, "dist")], { stdio: "inherit" });
  for (const dir of ["bin", "migrations", "contracts"]) cpSync(path.join(ROOT, dir), path.join(app, dir), { recursive: true });
  cpSync(path.join(ROOT, "package.json"), path.join(app, "package.json"));
  symlinkSync(path.join(ROOT, "node_modules"), path.join(app, "node_modules"));
});
after(() => rmSync(app, { recursive: true, force: true }));

function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [path.join(app, "bin/masq"), ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  return new Promise((resolve) => child.on("close", (code) => (clearTimeout(timer), resolve({ code, stdout, stderr }))));
}

describe("the compiled JavaScript the container image ships", () => {
  test("holds no TypeScript, and bin/masq runs it when src/ is absent", async () => {
    const cli = readFileSync(path.join(app, "dist/cli.js"), "utf8");
    assert.doesNotMatch(cli, /from "\.[^"]*\.ts"|import\("\.[^"]*\.ts"\)/, "relative .ts imports are rewritten to .js");
    const r = await run(["--help"], { PATH: process.env.PATH, HOME: process.env.HOME });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Usage: masq/);
  });

  test("every module a compiled file loads by URL (a thread's entry, the fauxqs server) is beside it", () => {
    const dist = path.join(app, "dist");
    const files = readdirSync(dist, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".js"));
    const missing: string[] = [];
    let loaded = 0;
    for (const file of files) {
      const text = readFileSync(path.join(dist, file), "utf8");
      // new URL(… ? "./x.ts" : "./x.js", import.meta.url): the .js branch is the compiled one.
      for (const line of text.split("\n").filter((l) => l.includes("new URL(") && l.includes("import.meta.url"))) {
        for (const m of line.matchAll(/"(\.{1,2}\/[^"]+\.js)"/g)) {
          loaded++;
          if (!existsSync(path.join(dist, path.dirname(file), m[1]!))) missing.push(`${file} → ${m[1]}`);
        }
      }
    }
    assert.ok(loaded >= 3, `found ${loaded} modules loaded by URL`);
    assert.deepEqual(missing, []);
  });

  test("it finds the login contract it ships (check --offline)", async () => {
    const r = await run(["check", "--offline"], { PATH: process.env.PATH, HOME: process.env.HOME });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^ok {4}contract: .*contracts\/login\.yaml: login → user_logins/);
  });

  test("a drain with it commits every valid message and quarantines the malformed ones", async () => {
    const events = uniqueEvents(300, 11, 0.05);
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, events.map((e) => e.body));
    const r = await run(["run", "--drain"], masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url }));
    assert.equal(r.code, 0, r.stderr);
    const want = expectedCounts(events);
    const rows = await fx.db.pool.query<{ n: string }>("SELECT count(*) AS n FROM public.user_logins");
    const quarantined = await fx.db.pool.query<{ n: string }>("SELECT count(*) AS n FROM masq.quarantine");
    assert.equal(Number(rows.rows[0]!.n), want.valid);
    assert.equal(Number(quarantined.rows[0]!.n), events.length - want.valid);
    // It really ran the compiled files: their paths are the ones a stack or a module error would name.
    assert.doesNotMatch(r.stderr, /\.ts\b/);
  });
});
