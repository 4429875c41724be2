import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { sendBodies } from "../../src/ops/demo.ts";
import { assertMatchesSample, docBlock, REPO_ROOT, runDocBlock, runDocCommands, runDocSql, runShell, substitute, type ShellResult } from "../helpers/doc-blocks.ts";
import { MASQ_BIN, masqEnv } from "../helpers/masq-process.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";
import { startTestSqs, type TestSqs } from "../helpers/sqs.ts";
import { SAMPLE, sampleWith, VECTORS } from "../unit/fixtures.ts";

/**
 * The documentation's commands, run as written (test/helpers/doc-blocks.ts): the blocks marked <!-- run: id --> in
 * README.md, SECURITY.md and docs/*.md, against real Postgres and fauxqs, and the samples compared with real output.
 * `masq` in a block is this checkout's bin/masq, put first on PATH.
 */
const binDir = mkdtempSync(join(tmpdir(), "masq-docs-bin-"));
symlinkSync(MASQ_BIN, join(binDir, "masq"));
const PATH = `${binDir}:${dirname(process.execPath)}:${process.env.PATH ?? ""}`;
const hasPsql = PATH.split(":").some((d) => d !== "" && exists(join(d, "psql")));

function exists(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
}

function ok(r: ShellResult & { command?: string }, what = r.command ?? "the block"): void {
  assert.equal(r.code, 0, `${what} exited ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
}

/** The number of the newest migration this checkout ships. */
function latestMigration(): number {
  return Math.max(...readdirSync(join(REPO_ROOT, "migrations")).map((f) => Number(/^(\d+)_/.exec(f)?.[1] ?? 0)));
}

let sqs: TestSqs;
const databases: TestDatabase[] = [];
before(async () => {
  sqs = await startTestSqs();
});
after(async () => {
  await sqs.close();
  for (const d of databases) await d.close();
  rmSync(binDir, { recursive: true, force: true });
});

/** A fresh database with `bodies` ingested by `masq run --drain`, and the environment the blocks run with. */
async function ingested(bodies: string[], extra: Record<string, string> = {}): Promise<{ env: NodeJS.ProcessEnv; db: TestDatabase; queueUrl: string }> {
  const db = await createTestDatabase();
  databases.push(db);
  const queueUrl = sqs.newQueue();
  await sendBodies(sqs.client, queueUrl, bodies);
  const env: NodeJS.ProcessEnv = { ...masqEnv({ queueUrl, sqsEndpoint: sqs.endpoint, databaseUrl: db.url, extra }), PATH };
  for (const [k, v] of Object.entries(extra)) if (v === "") delete env[k];
  ok(await runShell("masq run --drain", { env }), "masq run --drain");
  return { env, db, queueUrl };
}

const USER = "6b3f4f0e-7c1d-4b8e-9a51-2f1d7e0c9a11";
const bodies = (): string[] => [
  sampleWith({ user_id: USER }),
  sampleWith({ user_id: USER, ip: "2001:DB8::1", device_id: "100-20-3000" }),
  ...Array.from({ length: 30 }, (_, i) => sampleWith({ user_id: `u-${i}`, ip: `198.51.100.${i}`, device_id: `dev-${i % 7}` })),
  sampleWith({ ip: "999.1.1.1" }), // invalid_ip: replayed below with a corrected body
  sampleWith({ ip: "not an ip" }),
  "{not json",
  sampleWith({ app_version: 2.3 }),
];

describe("operations.md: unmask, status and the quarantine, as written", () => {
  let env: NodeJS.ProcessEnv;
  let db: TestDatabase;
  before(async () => {
    ({ env, db } = await ingested(bodies()));
  });

  test("the unmask examples reveal the values they name", async () => {
    const today = new Date().toISOString().slice(0, 10);
    const [byPseudonym, byUser, pseudonym] = await runDocCommands("unmask-examples", {
      env,
      values: { "6f1b…": USER, "2026-11-01": today, "2026-11-24": today },
    });
    for (const r of [byPseudonym!, byUser!, pseudonym!]) ok(r);
    assert.match(byPseudonym!.stdout, new RegExp(SAMPLE.device_id));
    assert.match(byUser!.stdout, /2001:db8::1/);
    assert.match(byUser!.stdout, /100-20-3000/);
    assert.match(byUser!.stdout, new RegExp(SAMPLE.device_id));
    assert.match(pseudonym!.stdout, new RegExp(VECTORS.sampleDeviceId.hmac));
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    const audit = await c.query<{ n: string }>("SELECT count(*) AS n FROM masq.unmask_audit");
    await c.end();
    assert.equal(Number(audit.rows[0]!.n), 3, "each example wrote its audit row");
  });

  test("data-model.md: the analysts' queries and the quarantine queries run and find what they describe", async () => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      const [shared, versions] = await runDocSql("analyst-queries", c);
      assert.ok(shared!.rows.length > 0, "devices shared by several users (dev-0 … dev-6 are)");
      assert.deepEqual(versions!.rows.map((r: { version: string }) => r.version), ["2.3.0"]);
      const [byReason, wrongType, byDevice] = await runDocSql("quarantine-queries", c, { "<masked_device_id>": VECTORS.sampleDeviceId.hmac });
      assert.equal(byReason!.rows.length, 3, "invalid_ip, invalid_json, wrong_type");
      assert.equal(wrongType!.rows.length, 1);
      assert.ok(byDevice!.rows.length >= 2, "the quarantined bodies that carried device 593-47-5928");
    } finally {
      await c.end();
    }
  });

  test("the quarantine examples list, show and replay as documented", async () => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    const { rows } = await c.query<{ message_id: string }>("SELECT message_id FROM masq.quarantine WHERE reason = 'invalid_ip' ORDER BY message_id LIMIT 1");
    const id = rows[0]!.message_id;
    const cwd = mkdtempSync(join(tmpdir(), "masq-docs-q-"));
    writeFileSync(join(cwd, "fixed.json"), sampleWith({ ip: "203.0.113.7" }));
    const results = await runDocCommands("quarantine-examples", { env, cwd, values: { "<message-id>": id } });
    rmSync(cwd, { recursive: true, force: true });
    const [list, listReason, show, replayReason, dryRun, replayAll, replayOne] = results;
    for (const r of [list!, listReason!, show!, replayReason!, dryRun!, replayOne!]) ok(r);
    assert.match(list!.stdout, /invalid_json/);
    const listed = JSON.parse(listReason!.stdout) as { reason: string }[];
    assert.ok(listed.length === 2 && listed.every((q) => q.reason === "invalid_ip"), listReason!.stdout);
    assert.match(show!.stdout, new RegExp(id));
    // Documented: what today's masq still refuses stays quarantined, and replay --all exits 1 to say so.
    assert.equal(replayAll!.code, 1, `${replayAll!.command}\n${replayAll!.stdout}\n${replayAll!.stderr}`);
    const fixed = await c.query("SELECT 1 FROM masq.quarantine WHERE message_id = $1 AND replayed_at IS NOT NULL", [id]);
    const written = await c.query<{ n: string }>("SELECT count(*) AS n FROM public.user_logins");
    await c.end();
    assert.equal(fixed.rowCount, 1, "the record replayed with the corrected body is marked replayed");
    assert.equal(Number(written.rows[0]!.n), 33, "32 valid rows and the corrected one");
  });

  test("the subject export examples show the user's rows and values, and a quarantined original, each audited", async () => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    const { rows } = await c.query<{ message_id: string }>("SELECT message_id FROM masq.quarantine WHERE reason = 'invalid_json' LIMIT 1");
    const today = new Date().toISOString().slice(0, 10);
    const [json, csv, original] = await runDocCommands("subject-examples", { env, values: { "6f1b…": USER, "2026-11-01": today, "2026-11-30": today, "<message-id>": rows[0]!.message_id } });
    for (const r of [json!, csv!, original!]) ok(r);
    const lines = JSON.parse(json!.stdout) as { source: string; ip?: string; device_id?: string }[];
    assert.deepEqual(lines.filter((l) => l.source === "row").map((l) => l.device_id).sort(), ["100-20-3000", SAMPLE.device_id]);
    assert.match(csv!.stdout, /2001:db8::1/);
    assert.match(original!.stdout, /\{not json/);
    const audit = await c.query<{ action: string }>("SELECT action FROM masq.audit WHERE action IN ('subject-export', 'quarantine-original') ORDER BY seq");
    await c.end();
    assert.deepEqual(audit.rows.map((r) => r.action), ["subject-export", "subject-export", "quarantine-original"]);
  });
});

test("operations.md: masq status as the sample shows, then the rotation examples rotate both keys", async () => {
  // The key masq manages, as a user who sets no MASQ_PSEUDONYM_KEY has (and rotation needs).
  const { env, db } = await ingested(bodies(), { MASQ_PSEUDONYM_KEY: "" });
  const status = await runShell("masq status", { env });
  ok(status, "masq status");
  assertMatchesSample("status", status.stdout);
  assert.match(docBlock("status", "sample").text, new RegExp(`schema at migration ${latestMigration()}\\b`), "the sample shows the newest migration");

  const results = await runDocCommands("rotate-examples", { env });
  for (const r of results) ok(r);
  assert.equal(results.length, 5);
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  const keys = await c.query<{ version: number; state: string }>("SELECT version, state FROM masq.pseudonym_keys ORDER BY version");
  await c.end();
  assert.deepEqual(
    keys.rows.map((k) => `${k.version}:${k.state}`),
    ["1:retired", "2:retired", "3:active"],
    "the block rotates the pseudonym key twice (masq rotate pseudonym-key, then scripts/rotate-keys)",
  );
  const reveal = await runShell(`masq unmask --reason "after rotation" --user-id ${USER} --format csv`, { env });
  ok(reveal, "unmask after the rotations");
  assert.match(reveal.stdout, new RegExp(SAMPLE.device_id));
});

test("the login roles: SECURITY.md's and deploy.md's commands make logins that run masq as documented", async () => {
  const db = await createTestDatabase();
  databases.push(db);
  const tag = Math.random().toString(16).slice(2, 10);
  // Roles are cluster-wide: names of this run, dropped at the end; known passwords, to log in with them.
  const roles = (n: number) => ({
    "service_role=masq_service": `service_role=t_svc${n}_${tag}`,
    "person_role=alice": `person_role=t_alice${n}_${tag}`,
    '"$(openssl rand -hex 24)"': `pw${tag}`,
  });
  const env: NodeJS.ProcessEnv = { PATH, HOME: process.env.HOME, OWNER_DATABASE_URL: db.url, MASQ_HTTP_PORT: "0" };
  const owner = new pg.Client({ connectionString: db.url });
  await owner.connect();
  try {
    ok(await runDocBlock("login-roles-deploy", { env, values: roles(1) }), "deploy.md's migrate and login roles");
    ok(await runDocBlock("login-roles-security", { env, values: roles(2) }), "SECURITY.md's login roles");
    const as = (role: string) => {
      const u = new URL(db.url);
      u.username = role;
      u.password = `pw${tag}`;
      return u.toString();
    };
    // SECURITY.md: the service login runs masq status; the person login reads the audit trail.
    const status = await runShell("masq status", { env: { ...env, DATABASE_URL: as(`t_svc1_${tag}`) } });
    ok(status, "masq status as the service login");
    const audit = await runShell("masq audit list", { env: { ...env, DATABASE_URL: as(`t_alice2_${tag}`) } });
    ok(audit, "masq audit list as the person login");
  } finally {
    for (const r of [`t_svc1_${tag}`, `t_alice1_${tag}`, `t_svc2_${tag}`, `t_alice2_${tag}`]) {
      await owner.query(`DROP OWNED BY ${r}`).catch(() => undefined);
      await owner.query(`DROP ROLE IF EXISTS ${r}`);
    }
    await owner.end();
  }
});

test("SECURITY.md: the test vectors come out of OpenSSL and of masq's code as the table says", async () => {
  const expected = Object.values(VECTORS).map((v) => v.hmac);
  const openssl = await runDocBlock("vectors-openssl", { env: { PATH } });
  const node = await runDocBlock("vectors-node", { env: { PATH } });
  for (const [id, r] of [["vectors-openssl", openssl], ["vectors-node", node]] as const) {
    ok(r, id);
    for (const hmac of expected) assert.ok(r.stdout.includes(hmac), `${id} does not print ${hmac}:\n${r.stdout}`);
  }
});

test("deploy.md: deploy/lambda/package.sh builds the zip, of about the size the doc says", async (t) => {
  // The user's whole environment: npx fetches esbuild through it (registry, proxy, CA certificates).
  const r = await runDocBlock("lambda-package", { env: { ...process.env, PATH }, timeoutMs: 240_000 });
  if (r.code !== 0 && /ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|network/i.test(r.stderr)) {
    t.skip("the npm registry is unreachable, and package.sh fetches esbuild with npx");
    return;
  }
  ok(r, "deploy/lambda/package.sh");
  const documented = Number(/about (\d+) KB/.exec(docBlock("lambda-package").text)?.[1]);
  const actual = statSync(join(REPO_ROOT, "dist/masq-lambda.zip")).size / 1024;
  assert.ok(Math.abs(actual - documented) / documented < 0.2, `the zip is ${Math.round(actual)} KB; the doc says about ${documented} KB`);
});

test("README: demo --keep serves its Postgres until Ctrl-C, and the psql example queries it", async (t) => {
  // The demo keeps its data under the current directory: a scratch one, enterable by the postgres user when root.
  const cwd = mkdtempSync(join(tmpdir(), "masq-docs-demo-"));
  chmodSync(cwd, 0o755);
  symlinkSync(join(REPO_ROOT, "bin"), join(cwd, "bin"));
  const script = substitute(docBlock("demo-keep"), { "--keep": "--keep --messages 1000" });
  const child = spawn("bash", ["-c", script], {
    cwd,
    env: { PATH, HOME: process.env.HOME },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true, // its own process group: Ctrl-C reaches masq, not only bash
  });
  let out = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no psql line within 180 s:\n${out}`)), 180_000);
      child.stdout.on("data", () => {
        const m = /psql (postgres:\/\/\S+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      void exited.then((code) => reject(new Error(`demo --keep exited ${code} before printing the psql line:\n${out}`)));
    });
    const port = new URL(url).port;
    assert.match(out, /masq demo summary/);
    if (hasPsql) {
      const q = await runDocBlock("demo-keep-psql", { env: { PATH }, values: { "<port>": port } });
      ok(q, "the psql example");
      assert.match(q.stdout, /2\.\d+\.\d+/, "app versions as text");
    } else {
      t.skip("psql is not installed: the psql example did not run");
    }
  } finally {
    process.kill(-child.pid!, "SIGINT");
    const code = await exited;
    rmSync(cwd, { recursive: true, force: true });
    assert.equal(code, 0, `demo --keep after Ctrl-C:\n${out}`);
  }
});
