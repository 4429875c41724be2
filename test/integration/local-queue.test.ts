import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { generateEvents } from "../../src/ops/synthetic-events.ts";
import { MASQ_BIN, masqEnv, spawnMasq, type MasqProcess } from "../helpers/masq-process.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";

/** Starts `masq local-queue …` and waits for the environment it prints. */
async function localQueue(args: string[]): Promise<{ proc: MasqProcess; env: Record<string, string>; notes: string }> {
  const proc = spawnMasq(["local-queue", ...args], { PATH: process.env.PATH, HOME: process.env.HOME });
  for (const until = Date.now() + 60_000; !proc.lines.some((l) => l.startsWith("Ctrl-C")); ) {
    if (proc.child.exitCode !== null || Date.now() > until) assert.fail(`local-queue did not start:\n${proc.lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const env: Record<string, string> = {};
  for (const line of proc.lines.filter((l) => l.startsWith("export "))) {
    for (const pair of line.slice("export ".length).split(" ")) {
      const [k, ...v] = pair.split("=");
      env[k!] = v.join("=");
    }
  }
  return { proc, env, notes: proc.lines.filter((l) => !l.startsWith("export ")).join("\n") };
}

async function stop(proc: MasqProcess): Promise<number | null> {
  proc.child.kill("SIGINT");
  return (await proc.exited).code;
}

describe("masq local-queue: a local SQS server for masq run, without Docker", () => {
  let t: TestDatabase;
  before(async () => {
    t = await createTestDatabase();
  });
  after(() => t.close());

  test("--synthetic: prints the environment for masq run, which drains it, and stops on Ctrl-C", async () => {
    const { proc, env, notes } = await localQueue(["--synthetic", "500"]);
    try {
      assert.match(env.QUEUE_URL!, /^http:\/\/127\.0\.0\.1:\d+\/000000000000\/login-queue$/);
      assert.match(notes, /queue login-queue holds 500 message\(s\)/);
      const run = spawnMasq(["run", "--drain"], {
        ...masqEnv({ queueUrl: env.QUEUE_URL!, sqsEndpoint: env.AWS_ENDPOINT_URL_SQS!, databaseUrl: t.url }),
        AWS_ACCESS_KEY_ID: env.AWS_ACCESS_KEY_ID!,
        AWS_SECRET_ACCESS_KEY: env.AWS_SECRET_ACCESS_KEY!,
        MASQ_TABLE: "lq_synthetic",
      });
      const { code } = await run.exited;
      assert.equal(code, 0, run.lines.join("\n"));
      const c = new pg.Client({ connectionString: t.url });
      await c.connect();
      try {
        const rows = Number((await c.query<{ n: string }>("SELECT count(*) AS n FROM lq_synthetic")).rows[0]!.n);
        const quarantined = Number((await c.query<{ n: string }>("SELECT count(*) AS n FROM masq.quarantine")).rows[0]!.n);
        assert.equal(rows + quarantined, 500);
        assert.ok(quarantined > 0, "the synthetic events include malformed ones");
      } finally {
        await c.end();
      }
    } finally {
      assert.equal(await stop(proc), 0, proc.lines.join("\n"));
    }
  });

  test("--events: one message per non-empty line of a JSON-lines file, as given", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "masq-lq-"));
    try {
      const file = path.join(dir, "events.jsonl");
      const bodies = generateEvents(4, { seed: 7 }).map((e) => e.body);
      writeFileSync(file, `${bodies.slice(0, 2).join("\n")}\n\n${bodies.slice(2).join("\r\n")}\n`);
      const { proc, notes } = await localQueue(["--events", file, "--queue-name", "mine"]);
      assert.match(notes, /queue mine holds 4 message\(s\)/);
      assert.equal(await stop(proc), 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a port in use: exit 2, one line naming --port", async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, r));
    try {
      const port = (busy.address() as { port: number }).port;
      const r = spawnSync(process.execPath, [MASQ_BIN, "local-queue", "--port", String(port)], { encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 2, r.stderr);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, /--port.*in use/);
    } finally {
      busy.close();
    }
  });

  test("a file that cannot be read: exit 2, naming --events", () => {
    const r = spawnSync(process.execPath, [MASQ_BIN, "local-queue", "--events", "/nonexistent/events.jsonl"], { encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--events.*ENOENT/);
    assert.ok(!r.stderr.includes("    at "), r.stderr);
  });
});
