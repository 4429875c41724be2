import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { sendBodies } from "../../src/ops/demo.ts";
import { SqsSource } from "../../src/ingest/sqs-source.ts";
import { IngestKeys } from "../../src/keys/ingest-keys.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { masqEnv } from "../helpers/masq-process.ts";
import { closedPort, INTERNALS, runMasq, type MasqRun } from "../helpers/masq-run.ts";
import { TEST_MASTER_KEY, uniqueEvents } from "../helpers/pipeline.ts";

const fx = usePipelineFixture();
const PASSWORD = "ch3ck-pw";

function urlWith(change: { user?: string; password?: string; database?: string }): string {
  const u = new URL(fx.pgdb.url);
  if (change.user !== undefined) u.username = change.user;
  if (change.password !== undefined) u.password = change.password;
  if (change.database !== undefined) u.pathname = `/${change.database}`;
  return u.toString();
}

/** The checklist: name → "ok" | "FAIL" | "skip", and the text after the name. */
function checklist(r: MasqRun): Map<string, { state: string; text: string }> {
  const out = new Map<string, { state: string; text: string }>();
  for (const line of r.stdout.split("\n")) {
    const m = /^(ok|FAIL|skip) +([^:]+): (.*)$/.exec(line);
    if (m) out.set(m[2]!, { state: m[1]!, text: m[3]! });
  }
  return out;
}

const NAMES = ["configuration", "AWS credentials", "queue", "Postgres login", "migrations", "target table", "ingest privileges", "key provider"];

function assertChecklist(r: MasqRun, expect: Record<string, "ok" | "FAIL" | "skip">): Map<string, { state: string; text: string }> {
  const list = checklist(r);
  assert.deepEqual([...list.keys()], NAMES, r.stdout + r.stderr);
  for (const [name, state] of Object.entries(expect)) assert.equal(list.get(name)?.state, state, `${name}: ${r.stdout}`);
  assert.ok(!INTERNALS.test(r.stdout + r.stderr), r.stdout + r.stderr);
  assert.ok(!(r.stdout + r.stderr).includes(PASSWORD));
  return list;
}

describe("masq check", () => {
  const ingest = `masq_check_${randomBytes(3).toString("hex")}`;
  const spare = `masq_check_${randomBytes(3).toString("hex")}`;
  let admin: pg.Client;
  let queueUrl: string;
  const env = (extra: Record<string, string> = {}) => masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { MASQ_CONNECT_TIMEOUT_SECONDS: "5", ...extra } });

  before(async () => {
    admin = new pg.Client({ connectionString: fx.pgdb.url });
    await admin.connect();
    await admin.query(`CREATE ROLE ${ingest} LOGIN PASSWORD '${PASSWORD}' IN ROLE masq_ingest`);
    await admin.query(`CREATE DATABASE ${spare}`);
    // A pseudonym key wrapped by the master key, as masq run leaves it, so that unwrapping it is checked.
    const keys = await IngestKeys.open({ pool: fx.db.pool, provider: new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY)) });
    keys.close();
    queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, uniqueEvents(5, 3, 0).map((e) => e.body));
  });
  after(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${spare} WITH (FORCE)`);
    await admin.query(`DROP OWNED BY ${ingest}`).catch(() => undefined);
    await admin.query(`DROP ROLE IF EXISTS ${ingest}`);
    await admin.end();
  });

  async function state() {
    const { rows } = await fx.db.pool.query<{ s: string }>(
      `SELECT concat_ws(',', (SELECT count(*) FROM masq.pseudonym_keys), (SELECT count(*) FROM masq.data_keys), (SELECT count(*) FROM masq.ingest_ledger),
                        (SELECT count(*) FROM masq.quarantine), (SELECT count(*) FROM public.user_logins), (SELECT count(*) FROM masq.schema_migrations)) AS s`,
    );
    return { db: rows[0]!.s, queue: await new SqsSource(fx.sqs.client, queueUrl).counts() };
  }

  test("passes when run would work, as the owner: exit 0, and it consumes and writes nothing", async () => {
    const before = await state();
    const r = await runMasq(["check"], env({ MASQ_PSEUDONYM_KEY: "" }));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const list = assertChecklist(r, Object.fromEntries(NAMES.map((n) => [n, "ok"])));
    assert.match(list.get("queue")!.text, /answers over the json protocol .*: 5 visible, 0 in flight/);
    assert.match(list.get("key provider")!.text, /unwraps pseudonym key version 1/);
    assert.match(r.stdout, /masq run would work\n$/);
    assert.deepEqual(await state(), before);
  });

  test("passes as a login with masq_ingest and INSERT on the table; fails, naming the privilege, without it", async () => {
    const asIngest = env({ DATABASE_URL: urlWith({ user: ingest, password: PASSWORD }), MASQ_PSEUDONYM_KEY: "", MASQ_MIGRATE: "false" });
    const without = await runMasq(["check"], asIngest);
    assert.equal(without.code, 1, without.stdout);
    const list = assertChecklist(without, { "ingest privileges": "FAIL", "Postgres login": "ok", "key provider": "ok" });
    assert.match(list.get("ingest privileges")!.text, new RegExp(`role ${ingest} lacks INSERT on "public"."user_logins"`));
    await admin.query(`GRANT INSERT ON public.user_logins TO ${ingest}`);
    const granted = await runMasq(["check"], asIngest);
    assert.equal(granted.code, 0, granted.stdout);
    assertChecklist(granted, Object.fromEntries(NAMES.map((n) => [n, "ok"])));
  });

  test("a wrong setting: exit 2, the setting named, and every other check still run", async () => {
    const r = await runMasq(["check"], env({ MASQ_BATCH_SIZE: "lots", MASQ_PSEUDONYM_KEY: "" }));
    assert.equal(r.code, 2, r.stdout);
    const list = assertChecklist(r, { configuration: "FAIL", "AWS credentials": "ok", queue: "ok", "Postgres login": "ok", migrations: "ok", "key provider": "ok" });
    assert.match(list.get("configuration")!.text, /\(MASQ_BATCH_SIZE\)/);
  });

  test("no master key and two wrong settings: all three reported, the missing key named (not MASQ_KEY_PROVIDER), the checks that need no key still run", async () => {
    const e = env({ MASQ_BATCH_SIZE: "lots", MASQ_CONNECT_TIMEOUT_SECONDS: "soon", MASQ_PSEUDONYM_KEY: "" });
    delete e.MASQ_MASTER_KEY;
    const r = await runMasq(["check"], e);
    assert.equal(r.code, 2, r.stdout);
    const list = assertChecklist(r, { "AWS credentials": "ok", queue: "ok", "Postgres login": "ok", migrations: "ok", "target table": "ok", "key provider": "skip" });
    const config = r.stdout.split("\n").filter((l) => l.startsWith("FAIL  configuration: "));
    assert.equal(config.length, 3, r.stdout);
    assert.ok(config.some((l) => /\(MASQ_BATCH_SIZE\)/.test(l)), r.stdout);
    assert.ok(config.some((l) => /\(MASQ_CONNECT_TIMEOUT_SECONDS\)/.test(l)), r.stdout);
    assert.ok(config.some((l) => /^FAIL {2}configuration: no master key \(MASQ_KMS_KEY_ID or MASQ_MASTER_KEY\): /.test(l)), r.stdout);
    assert.ok(!r.stdout.includes("MASQ_KEY_PROVIDER"), r.stdout);
    assert.match(list.get("key provider")!.text, /needs valid key settings/);
  });

  test("no AWS credentials: exit 2, naming what to set", async () => {
    const e = env({ HOME: mkdtempSync(path.join(tmpdir(), "masq-home-")), AWS_EC2_METADATA_DISABLED: "true" });
    delete e.AWS_ACCESS_KEY_ID;
    delete e.AWS_SECRET_ACCESS_KEY;
    const r = await runMasq(["check"], e);
    assert.equal(r.code, 2, r.stdout);
    const list = assertChecklist(r, { "AWS credentials": "FAIL", queue: "skip", "Postgres login": "ok" });
    assert.match(list.get("AWS credentials")!.text, /^no AWS credentials \(AWS_ACCESS_KEY_ID\): .*AWS_PROFILE/);
  });

  test("a queue that does not exist: exit 2, naming QUEUE_URL", async () => {
    const r = await runMasq(["check"], { ...env({ MASQ_PSEUDONYM_KEY: "" }), QUEUE_URL: `${fx.sqs.endpoint}/000000000000/no-such-queue` });
    assert.equal(r.code, 2, r.stdout);
    const list = assertChecklist(r, Object.fromEntries(NAMES.map((n) => [n, n === "queue" ? "FAIL" : "ok"])));
    assert.match(list.get("queue")!.text, /\(QUEUE_URL\): no such queue/);
  });

  test("a database that does not exist: exit 2, naming DATABASE_URL", async () => {
    const r = await runMasq(["check"], env({ DATABASE_URL: urlWith({ database: "no_such_database" }) }));
    assert.equal(r.code, 2, r.stdout);
    const list = assertChecklist(r, { "Postgres login": "FAIL", migrations: "skip", "target table": "skip" });
    assert.match(list.get("Postgres login")!.text, /\(DATABASE_URL at .*\/no_such_database\): database "no_such_database" does not exist/);
  });

  test("migrations not applied: ok when run applies them, FAIL with MASQ_MIGRATE=false", async () => {
    const fresh = env({ DATABASE_URL: urlWith({ database: spare }), MASQ_PSEUDONYM_KEY: "" });
    const on = await runMasq(["check"], fresh);
    assert.equal(on.code, 0, on.stdout);
    const list = assertChecklist(on, { migrations: "ok", "target table": "ok", "ingest privileges": "skip" });
    assert.match(list.get("migrations")!.text, /migrations 101 to \d+ are pending; run applies them at start/);
    assert.match(list.get("target table")!.text, /does not exist yet; run creates it/);
    const off = await runMasq(["check"], { ...fresh, MASQ_MIGRATE: "false" });
    assert.equal(off.code, 1, off.stdout);
    assert.match(assertChecklist(off, { migrations: "FAIL" }).get("migrations")!.text, /\(MASQ_MIGRATE=false\): run masq migrate/);
    const tables = new pg.Client({ connectionString: urlWith({ database: spare }) });
    await tables.connect();
    const { rows } = await tables.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'masq'");
    await tables.end();
    assert.equal(rows[0]!.n, 0, "check created masq's schema");
  });

  test("a target table without the columns masq writes: exit 1, naming the column", async () => {
    await admin.query("CREATE TABLE public.wrong_shape (user_id text, ip text)");
    const r = await runMasq(["check"], env({ MASQ_TABLE: "wrong_shape", MASQ_PSEUDONYM_KEY: "" }));
    assert.equal(r.code, 1, r.stdout);
    const list = assertChecklist(r, { "target table": "FAIL", migrations: "ok", "key provider": "ok" });
    assert.match(list.get("target table")!.text, /has no column device_type/);
  });

  test("a MASQ_PSEUDONYM_KEY that is not the database's: exit 2, named", async () => {
    const r = await runMasq(["check"], env());
    assert.equal(r.code, 2, r.stdout);
    assert.match(assertChecklist(r, { "key provider": "FAIL" }).get("key provider")!.text, /\(MASQ_PSEUDONYM_KEY\): is not the pseudonym key this database is written with/);
  });

  test("a master key that does not unwrap the stored pseudonym key: exit non-zero, naming the key setting", async () => {
    const r = await runMasq(["check"], env({ MASQ_MASTER_KEY: "ff".repeat(32), MASQ_PSEUDONYM_KEY: "" }));
    assert.notEqual(r.code, 0, r.stdout);
    const list = assertChecklist(r, { "key provider": "FAIL", "Postgres login": "ok" });
    assert.match(list.get("key provider")!.text, /MASQ_MASTER_KEY/);
  });

  test("a login that may read the wrapped data keys but not unwrap them: the key provider FAIL names the database it reached", async () => {
    const keys = await IngestKeys.open({ pool: fx.db.pool, provider: new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY)) });
    try {
      await keys.dataKeys.reserve(1);
    } finally {
      keys.close();
    }
    await admin.query(`GRANT SELECT (id, created_at, wrapped) ON masq.data_keys TO ${ingest}`);
    await admin.query(`GRANT INSERT ON public.user_logins TO ${ingest}`);
    try {
      const r = await runMasq(["check"], env({ DATABASE_URL: urlWith({ user: ingest, password: PASSWORD }), MASQ_PSEUDONYM_KEY: "", MASQ_MIGRATE: "false" }));
      const list = assertChecklist(r, { "key provider": "FAIL", "Postgres login": "ok" });
      const where = new URL(fx.pgdb.url);
      assert.match(list.get("key provider")!.text, /permission denied for function wrapped_data_keys/);
      assert.ok(list.get("key provider")!.text.includes(`(DATABASE_URL at ${where.hostname}:${where.port}${where.pathname})`), list.get("key provider")!.text);
    } finally {
      await admin.query(`REVOKE SELECT (id, created_at, wrapped) ON masq.data_keys FROM ${ingest}`);
    }
  });

  for (const command of ["check", "status"]) {
    test(`${command}: while Postgres refuses connections, says at once what it waits for and how long (never the password)`, async () => {
      const port = await closedPort();
      const r = await runMasq([command], env({ DATABASE_URL: `postgres://someone:${PASSWORD}@127.0.0.1:${port}/app`, MASQ_CONNECT_TIMEOUT_SECONDS: "2" }));
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const waiting = r.stderr.split("\n").filter((l) => /waiting/.test(l));
      assert.deepEqual(waiting, [`masq: waiting for Postgres at 127.0.0.1:${port}/app (DATABASE_URL), up to 2 s`], r.stderr);
      assert.ok(!(r.stdout + r.stderr).includes(PASSWORD) && !(r.stdout + r.stderr).includes("someone"), r.stdout + r.stderr);
    });
  }
});
