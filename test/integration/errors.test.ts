import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { sendBodies } from "../../src/ops/demo.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { masqEnv } from "../helpers/masq-process.ts";
import { closedPort, INTERNALS, runMasq, stderrLines, type MasqRun } from "../helpers/masq-run.ts";
import { uniqueEvents, waitFor } from "../helpers/pipeline.ts";
import { startTcpProxy } from "../helpers/tcp-proxy.ts";

const fx = usePipelineFixture();
const PASSWORD = "s3cret-pw";
const PSEUDONYM = "a".repeat(64);

/** The URL of the test database with another user, password, host:port or query. */
function urlWith(change: { user?: string; password?: string; port?: number; query?: string; database?: string }): string {
  const u = new URL(fx.pgdb.url);
  if (change.user !== undefined) u.username = change.user;
  if (change.password !== undefined) u.password = change.password;
  if (change.port !== undefined) {
    u.hostname = "127.0.0.1";
    u.port = String(change.port);
  }
  if (change.database !== undefined) u.pathname = `/${change.database}`;
  if (change.query !== undefined) u.search = change.query;
  return u.toString();
}

function env(extra: Record<string, string>): NodeJS.ProcessEnv {
  return masqEnv({ queueUrl: fx.sqs.newQueue(), sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { MASQ_CONNECT_TIMEOUT_SECONDS: "2", ...extra } });
}

function assertForPeople(r: MasqRun, secret = PASSWORD): string {
  const last = stderrLines(r).at(-1) ?? "";
  assert.match(last, /^masq: /, `stderr:\n${r.stderr}\nstdout:\n${r.stdout.slice(-2000)}`);
  assert.ok(!INTERNALS.test(r.stderr), `internals on stderr:\n${r.stderr}`);
  assert.ok(!r.stderr.includes(secret) && !r.stdout.includes(secret), "the password was printed");
  return last;
}

const ONE_SHOT: string[][] = [
  ["migrate"],
  ["status"],
  ["quarantine", "list"],
  ["quarantine", "replay", "--all"],
  ["unmask", "--reason", "case 4711", "--pseudonym", PSEUDONYM],
  ["pseudonym", "ip", "203.0.113.7", "--reason", "case 4711"],
  ["rotate", "master-key"],
  ["rotate", "pseudonym-key", "--dry-run"],
  ["run", "--drain"],
  ["check"],
];

describe("one-shot commands give up on an unreachable Postgres, naming the setting and host:port", () => {
  for (const args of ONE_SHOT) {
    test(`masq ${args.join(" ")} with nothing listening`, async () => {
      const port = await closedPort();
      const extra: Record<string, string> = { DATABASE_URL: urlWith({ password: PASSWORD, port }), MASQ_LOG_LEVEL: "info" };
      // pseudonym-key rotation refuses an explicit pseudonym key before it connects.
      if (args[1] === "pseudonym-key") extra.MASQ_PSEUDONYM_KEY = "";
      const r = await runMasq(args, env(extra));
      assert.equal(r.code, 1, r.stderr);
      // check prints its checklist on stdout: the failing line is in the same format.
      const last = args[0] === "check" ? `masq: ${/^FAIL {2}Postgres login: (.*)$/m.exec(r.stdout)?.[1] ?? r.stdout}` : assertForPeople(r);
      assert.ok(last.includes(`DATABASE_URL at 127.0.0.1:${port}`), last);
      if (args[0] !== "check" && args[0] !== "status") assert.match(last, /cannot reach Postgres within 2 s/);
    });
  }

  test("a Postgres that went down (the proxy drops every connection): migrate gives up the same way", async () => {
    const proxy = await startTcpProxy(fx.pgdb.port, fx.pgdb.host);
    proxy.cut();
    try {
      const r = await runMasq(["migrate"], env({ DATABASE_URL: urlWith({ password: PASSWORD, port: proxy.port }) }));
      assert.equal(r.code, 1);
      const last = assertForPeople(r);
      assert.match(last, new RegExp(`^masq: cannot reach Postgres within 2 s \\(DATABASE_URL at 127\\.0\\.0\\.1:${proxy.port}/`));
    } finally {
      await proxy.close();
    }
  });

  test("an interrupted migrate says what it was waiting for, in words, and exits 130", async () => {
    const port = await closedPort();
    const r = await runMasq(["migrate"], env({ DATABASE_URL: urlWith({ password: PASSWORD, port }), MASQ_CONNECT_TIMEOUT_SECONDS: "600" }), {
      during: (child, out) => void waitFor(() => out.stdout.includes("Postgres not ready; waiting"), 30_000, "a waiting line").then(() => child.kill("SIGINT")),
    });
    assert.equal(r.code, 130, r.stderr);
    const last = assertForPeople(r);
    assert.match(last, new RegExp(`^masq: interrupted while connecting to Postgres \\(DATABASE_URL at 127\\.0\\.0\\.1:${port}/[^)]*\\): `));
    assert.ok(!r.stderr.includes("interrupted\n") && !r.stderr.includes("Error"), r.stderr);
  });

  test("the service (run without --drain) keeps waiting, naming the setting in its log and in /readyz", async () => {
    const port = await closedPort();
    let readyz: { status: number; body: string } | undefined;
    const r = await runMasq(["run"], env({ DATABASE_URL: urlWith({ port }), MASQ_CONNECT_TIMEOUT_SECONDS: "1", MASQ_HTTP_HOST: "127.0.0.1" }), {
      during: (child, out) =>
        void waitFor(() => (out.stdout.match(/Postgres not ready; waiting/g) ?? []).length >= 4, 60_000, "waiting lines")
          .then(async () => {
            const http = /"port":(\d+)[^\n]*HTTP listener/.exec(out.stdout)?.[1];
            const res = await fetch(`http://127.0.0.1:${http}/readyz`);
            readyz = { status: res.status, body: await res.text() };
          })
          .finally(() => child.kill("SIGTERM")),
    });
    assert.equal(readyz?.status, 503);
    assert.ok(readyz.body.includes(`DATABASE_URL at 127.0.0.1:${port}/`), readyz.body);
    assert.equal(r.code, 0, r.stderr);
    const waiting = r.stdout.split("\n").filter((l) => l.includes("Postgres not ready; waiting"));
    assert.ok(waiting.length >= 4, "it waited past MASQ_CONNECT_TIMEOUT_SECONDS");
    assert.ok(waiting.every((l) => l.includes('"setting":"DATABASE_URL"') && l.includes(`"target":"127.0.0.1:${port}/`)), waiting[0] ?? "");
  });
});

describe("a drain that loses Postgres midway gives up after MASQ_CONNECT_TIMEOUT_SECONDS", () => {
  test("exit 1, the last line names DATABASE_URL and host:port; nothing committed is lost, the rest is redelivered", async () => {
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, uniqueEvents(3000, 9, 0).map((e) => e.body));
    const proxy = await startTcpProxy(fx.pgdb.port, fx.pgdb.host);
    try {
      const e = masqEnv({
        queueUrl,
        sqsEndpoint: fx.sqs.endpoint,
        databaseUrl: urlWith({ port: proxy.port }),
        extra: { MASQ_LOG_LEVEL: "debug", MASQ_CONNECT_TIMEOUT_SECONDS: "3", MASQ_BATCH_SIZE: "50", MASQ_BATCH_WAIT_MS: "50", MASQ_VISIBILITY_TIMEOUT: "5" },
      });
      const r = await runMasq(["run", "--drain"], e, {
        during: (_child, out) => void waitFor(() => out.stdout.includes("batch committed"), 60_000, "a commit").then(() => proxy.cut()),
      });
      assert.equal(r.code, 1, r.stderr);
      const last = assertForPeople(r);
      assert.match(last, new RegExp(`within 3 s \\(DATABASE_URL at 127\\.0\\.0\\.1:${proxy.port}/`));
    } finally {
      await proxy.close();
    }
  });
});

describe("mistakes in the Postgres settings are not outages: exit 2 at once, naming DATABASE_URL", () => {
  const nologin = `masq_nologin_${randomBytes(3).toString("hex")}`;
  const weak = `masq_weak_${randomBytes(3).toString("hex")}`;
  let admin: pg.Client;
  let checksPasswords = false;
  let tls = false;
  before(async () => {
    admin = new pg.Client({ connectionString: fx.pgdb.url });
    await admin.connect();
    await admin.query(`CREATE ROLE ${nologin} NOLOGIN PASSWORD '${PASSWORD}'`);
    await admin.query(`CREATE ROLE ${weak} LOGIN PASSWORD '${PASSWORD}'`);
    tls = (await admin.query<{ ssl: string }>("SHOW ssl")).rows[0]?.ssl === "on";
    // Trust authentication (the machine's Postgres) accepts any password: the wrong-password case needs one that checks.
    const probe = new pg.Client({ connectionString: urlWith({ user: weak, password: "wrong" }) });
    checksPasswords = await probe.connect().then(
      () => probe.end().then(() => false),
      () => true,
    );
  });
  after(async () => {
    await admin.query(`DROP ROLE IF EXISTS ${nologin}`);
    await admin.query(`REVOKE ALL ON SCHEMA masq FROM ${weak}`).catch(() => undefined);
    await admin.query(`DROP OWNED BY ${weak}`).catch(() => undefined);
    await admin.query(`DROP ROLE IF EXISTS ${weak}`);
    await admin.end();
  });

  const cases: [name: string, url: () => string, mentions: RegExp, skip?: () => string | false][] = [
    ["a database that does not exist", () => urlWith({ database: "no_such_db" }), /database "no_such_db" does not exist/],
    ["a role that does not exist", () => urlWith({ user: "no_such_role", password: PASSWORD }), /role "no_such_role" does not exist|password authentication failed/],
    ["a role that may not log in", () => urlWith({ user: nologin, password: PASSWORD }), /not permitted to log in/],
    ["a wrong password", () => urlWith({ user: weak, password: `${PASSWORD}-wrong` }), /password authentication failed/, () => !checksPasswords && "this server trusts every password"],
    ["sslmode=require against a server without TLS", () => urlWith({ query: "?sslmode=no-verify" }), /does not offer TLS/, () => tls && "this server offers TLS"],
    ["sslrootcert that does not exist", () => urlWith({ query: "?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem" }), /cannot be read \(ENOENT\)/],
    ["options=-c statement_timeout=banana", () => urlWith({ query: `?options=${encodeURIComponent("-c statement_timeout=banana")}` }), /invalid value for parameter "statement_timeout"/],
  ];
  for (const [name, url, mentions, skip] of cases) {
    for (const args of [["migrate"], ["run", "--drain"], ["quarantine", "list"]]) {
      test(`${name}: masq ${args.join(" ")}`, async (t) => {
        const why = skip?.();
        if (why) return t.skip(why);
        const r = await runMasq(args, env({ DATABASE_URL: url(), MASQ_CONNECT_TIMEOUT_SECONDS: "600" }), { killAfterMs: 60_000 });
        assert.equal(r.code, 2, `${r.stderr}\n${r.stdout.slice(-1500)}`);
        const last = assertForPeople(r);
        // Refused by the server, or (a file the URL names) already while the URL is read: DATABASE_URL either way.
        assert.match(last, /^masq: (Postgres refused the connection \(DATABASE_URL at 127\.0\.0\.1:\d+\/[^)]+\)|invalid setting \(DATABASE_URL\)): /);
        assert.match(last, mentions);
        assert.ok(!r.stdout.includes("waiting"), "a mistake was retried");
      });
    }
  }

  test("sslmode=require against a server without TLS (the libpq meaning)", async (t) => {
    if (tls) return t.skip("this server offers TLS");
    const r = await runMasq(["migrate"], env({ DATABASE_URL: urlWith({ query: "?sslmode=require" }), MASQ_CONNECT_TIMEOUT_SECONDS: "600" }), { killAfterMs: 60_000 });
    assert.equal(r.code, 2, r.stderr);
    assert.match(assertForPeople(r), /\(DATABASE_URL at .*\): the server does not offer TLS/);
  });

  test("a permission Postgres denies: exit 1, one line saying which privilege and where", async () => {
    const r = await runMasq(["quarantine", "list"], env({ DATABASE_URL: urlWith({ user: weak, password: PASSWORD }) }));
    assert.equal(r.code, 1, r.stderr);
    const last = assertForPeople(r);
    assert.match(last, /^masq: Postgres refused: permission denied for schema masq \(DATABASE_URL at 127\.0\.0\.1:\d+\/.*\): .*masq check/);
  });
});

describe("runtime failures on stderr, in words", () => {
  test("run --drain on a queue that does not exist: one line on stderr, no class name", async () => {
    const e = env({});
    const r = await runMasq(["run", "--drain"], { ...e, QUEUE_URL: `${fx.sqs.endpoint}/000000000000/no-such-queue` });
    assert.equal(r.code, 2, r.stderr);
    assertForPeople(r);
    assert.ok(stderrLines(r).length >= 1);
  });

  test("run --drain on an SQS endpoint with nothing listening gives up, naming the setting and host:port", async () => {
    const port = await closedPort();
    const r = await runMasq(["run", "--drain"], env({ AWS_ENDPOINT_URL_SQS: `http://127.0.0.1:${port}` }));
    assert.equal(r.code, 1, r.stderr);
    const last = assertForPeople(r);
    assert.ok(last.includes(`(AWS_ENDPOINT_URL_SQS at 127.0.0.1:${port})`), last);
  });

  test("run checks Postgres while it waits for SQS, but migrates and creates nothing until SQS has answered", async () => {
    const admin = new pg.Client({ connectionString: fx.pgdb.url });
    await admin.connect();
    const fresh = `masq_fresh_${randomBytes(4).toString("hex")}`;
    await admin.query(`CREATE DATABASE ${fresh}`);
    try {
      const port = await closedPort();
      // Five seconds of waiting for SQS: time enough to migrate a new database many times over, were it allowed.
      const r = await runMasq(["run", "--drain"], env({ AWS_ENDPOINT_URL_SQS: `http://127.0.0.1:${port}`, DATABASE_URL: urlWith({ database: fresh }), MASQ_CONNECT_TIMEOUT_SECONDS: "5" }));
      assert.equal(r.code, 1, r.stderr);
      assert.ok(assertForPeople(r).includes(`(AWS_ENDPOINT_URL_SQS at 127.0.0.1:${port})`), r.stderr);
      const db = new pg.Client({ connectionString: urlWith({ database: fresh }) });
      await db.connect();
      try {
        const made = await db.query<{ schema: string | null; table: string | null }>("SELECT to_regnamespace('masq')::text AS schema, to_regclass('public.user_logins')::text AS table");
        assert.deepEqual(made.rows[0], { schema: null, table: null });
      } finally {
        await db.end();
      }
    } finally {
      await admin.query(`DROP DATABASE ${fresh} WITH (FORCE)`);
      await admin.end();
    }
  });

  test("run --drain starts no HTTP listener unless asked for, and drains", async () => {
    const queueUrl = fx.sqs.newQueue();
    await sendBodies(fx.sqs.client, queueUrl, uniqueEvents(20, 5, 0).map((e) => e.body));
    const e = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url });
    delete e.MASQ_HTTP_PORT;
    const r = await runMasq(["run", "--drain"], e);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.includes("HTTP listener"), "a drain bound the metrics port");
  });

  test("quarantine show of an unknown id does not echo what was typed (it may be a value)", async () => {
    const r = await runMasq(["quarantine", "show", "203.0.113.10"], env({}));
    assert.equal(r.code, 1);
    assert.ok(!r.stderr.includes("203.0.113.10"), r.stderr);
    assert.match(assertForPeople(r), /^masq: no such quarantined message/);
  });
});
