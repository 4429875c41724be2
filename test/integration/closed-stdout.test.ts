import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { before, describe, test } from "node:test";
import { sendBodies } from "../../src/ops/demo.ts";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { masqEnv, MASQ_BIN } from "../helpers/masq-process.ts";
import { INTERNALS } from "../helpers/masq-run.ts";
import { makeRunner } from "../helpers/pipeline.ts";

interface Piped {
  /** masq's own exit status (bash's PIPESTATUS[0]). */
  code: number;
  /** What the reader printed of masq's stdout. */
  read: string;
  /** masq's stderr, which is not piped. */
  stderr: string;
}

/**
 * `masq <args> | <reader>` in a real shell pipeline: the reader stops reading early and closes the pipe (`head -1`
 * after one line, `true` before masq writes anything), as a person's `| head` does.
 */
function piped(args: string[], reader: string, env: NodeJS.ProcessEnv): Promise<Piped> {
  const script = 'reader="$1"; shift; "$@" 2>"$ERRFILE" | eval "$reader"; status=${PIPESTATUS[0]}; cat "$ERRFILE" >&2; exit "$status"';
  const errFile = `/tmp/masq-closed-stdout-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const child = spawn("bash", ["-c", script, "bash", reader, process.execPath, MASQ_BIN, ...args], { env: { ...env, ERRFILE: errFile }, stdio: ["ignore", "pipe", "pipe"] });
  const out = { read: "", stderr: "" };
  child.stdout.on("data", (c: Buffer) => (out.read += c.toString()));
  child.stderr.on("data", (c: Buffer) => (out.stderr += c.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
  return new Promise((resolve) => {
    child.on("close", (code) => {
      clearTimeout(timer);
      spawn("rm", ["-f", errFile]);
      resolve({ code: code ?? -1, ...out });
    });
  });
}

/** 128 + SIGPIPE: what `yes | head -1` leaves for yes (docs/operations.md, "Exit codes"). */
const CLOSED = 141;

function assertQuiet(r: Piped): void {
  assert.equal(r.code, CLOSED, `exit ${r.code}: ${r.stderr}`);
  assert.ok(!INTERNALS.test(r.stderr), r.stderr);
  assert.ok(!/EPIPE|nothing was shown/.test(r.stderr), r.stderr);
}

describe("a reader that closes stdout early", () => {
  const fx = usePipelineFixture();
  let env: NodeJS.ProcessEnv;
  let quarantinedId: string;

  before(async () => {
    const queueUrl = fx.sqs.newQueue();
    // One user with 1,500 logins from distinct addresses: an export and an unmask far larger than a pipe's buffer.
    const bodies = Array.from({ length: 1500 }, (_, i) =>
      JSON.stringify({ user_id: "pipe-user", ip: `10.${(i >> 8) & 255}.${i & 255}.7`, device_id: `device-${i}`, device_type: "ios", app_version: "1.2.3" }),
    );
    await sendBodies(fx.sqs.client, queueUrl, [...bodies, "{not json"]);
    await (await makeRunner({ db: fx.db, sqs: fx.sqs.client, queueUrl })).run({ drain: true });
    quarantinedId = (await fx.db.pool.query<{ id: string }>("SELECT message_id AS id FROM masq.quarantine LIMIT 1")).rows[0]!.id;
    env = masqEnv({ queueUrl, sqsEndpoint: fx.sqs.endpoint, databaseUrl: fx.pgdb.url, extra: { MASQ_CONNECT_TIMEOUT_SECONDS: "5" } });
  });

  // The reveals' own rows: the owner's first audited action also writes the audit key's first row ("audit-key").
  const auditRows = async () => (await fx.db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM masq.audit WHERE action <> 'audit-key'")).rows[0]!.n;

  test("check | head -1: the first line, then a quiet stop", async () => {
    const r = await piped(["check"], "head -n 1", env);
    assertQuiet(r);
    assert.match(r.read, /^ok {4}configuration: /);
    assert.equal(r.stderr, "");
  });

  test("status | true: a quiet stop", async () => {
    const r = await piped(["status"], "true", env);
    assertQuiet(r);
    assert.equal(r.stderr, "");
  });

  test("quarantine show | true: a quiet stop", async () => {
    const r = await piped(["quarantine", "show", quarantinedId], "true", env);
    assertQuiet(r);
    assert.equal(r.stderr, "");
  });

  test("subject export | head -c 600: 600 bytes were read, and stderr says the export was recorded, truthfully", async () => {
    const before = await auditRows();
    const r = await piped(["subject", "export", "--user-id", "pipe-user", "--reason", "access request DSR-77", "--format", "json"], "head -c 600", env);
    assertQuiet(r);
    assert.equal(Buffer.byteLength(r.read), 600);
    assert.equal(await auditRows(), before + 1, "the export's audit row stays");
    const seq = (await fx.db.pool.query<{ seq: string }>("SELECT max(seq)::text AS seq FROM masq.audit WHERE action = 'subject-export'")).rows[0]!.seq;
    assert.match(r.stderr, new RegExp(`^masq: stdout was closed before the subject export was complete .*audit row ${seq} records it\\n$`));
  });

  test("unmask | head -c 100: stderr names the audit row of what was revealed", async () => {
    const before = await auditRows();
    const r = await piped(["unmask", "--user-id", "pipe-user", "--reason", "ticket SEC-9", "--format", "csv"], "head -c 100", env);
    assertQuiet(r);
    assert.equal(Buffer.byteLength(r.read), 100);
    assert.equal(await auditRows(), before + 1);
    assert.match(r.stderr, /masq: stdout was closed before the unmask was complete .*audit row \d+ records it\n$/);
  });

  test("unmask | a slow reader: every line arrives (exiting with output still queued for the pipe would drop it)", async () => {
    const r = await piped(["unmask", "--user-id", "pipe-user", "--reason", "ticket SEC-10", "--format", "csv"], "(sleep 1; wc -l)", env);
    assert.equal(r.code, 0, r.stderr);
    // A header line and the 1,000 values of --limit's default.
    assert.equal(Number(r.read.trim()), 1001, r.stderr);
  });

  test("audit list | true: a quiet stop", async () => {
    const r = await piped(["audit", "list"], "true", env);
    assertQuiet(r);
    assert.equal(r.stderr, "");
  });
});
