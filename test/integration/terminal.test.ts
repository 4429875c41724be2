import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { after, before, test } from "node:test";
import { sendBodies } from "../../src/ops/demo.ts";
import { generateEvents, type SyntheticEvent } from "../../src/ops/synthetic-events.ts";
import type { TopSnapshot } from "../../src/ops/top.ts";
import { MASQ_BIN, masqEnv, spawnMasq, type MasqProcess } from "../helpers/masq-process.ts";
import { expectedCounts, uniqueEvents, waitFor } from "../helpers/pipeline.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";
import { startTestSqs, type TestSqs } from "../helpers/sqs.ts";
import { FakeTerminal } from "../helpers/terminal.ts";

// util-linux `script` gives the child a real pseudo-terminal on stdout and stderr, as a person's shell would.
const skip = spawnSync("script", ["--version"]).status === 0 ? false : "no util-linux script to give masq a pseudo-terminal";
const SENT = 3_000;

let sqs: TestSqs;
let t: TestDatabase;
before(async () => {
  sqs = await startTestSqs();
  t = await createTestDatabase();
});
after(async () => {
  await sqs.close();
  await t.close();
});

test("run --drain on a terminal: readable lines above a bar whose total is what the queue held, ending cleanly", { skip }, async () => {
  const queueUrl = sqs.newQueue();
  await sendBodies(sqs.client, queueUrl, generateEvents(SENT, { seed: 3 }).map((e) => e.body));
  const env = masqEnv({ queueUrl, sqsEndpoint: sqs.endpoint, databaseUrl: t.url, extra: { MASQ_BATCH_SIZE: "200", TERM: "xterm" } });
  delete env.CI; // CI=true means "nobody watches": no bar
  const command = `stty cols 120 rows 40; exec '${process.execPath}' '${MASQ_BIN}' run --drain`;
  const child = spawn("script", ["-qefc", command, "/dev/null"], { env, stdio: ["pipe", "pipe", "pipe"] });
  let raw = "";
  child.stdout.on("data", (d: Buffer) => (raw += d.toString()));
  child.stderr.on("data", (d: Buffer) => (raw += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
  assert.equal(code, 0, raw);

  const term = new FakeTerminal(120);
  term.write(raw.replace(/\r\n/g, "\n")); // the pty turns "\n" into "\r\n"
  const screen = term.lines();
  const bars = term.drawings.filter((d) => d.startsWith("draining ["));
  assert.ok(bars.length > 0, `no bar was drawn:\n${screen.join("\n")}`);
  for (const d of bars) {
    const total = Number(/\/([\d,]+) messages/.exec(d)?.[1]?.replace(/,/g, ""));
    assert.equal(total, SENT, `a drawing with another total than what the queue held: ${d}`);
    assert.doesNotMatch(d, /ETA (NF|NaN|Infinity)/);
  }
  for (const line of screen) {
    assert.ok(!(line.includes("draining [") && /INFO|WARN|\{"level"/.test(line)), `a log line glued to the bar: ${line}`);
  }
  const barRows = screen.filter((l) => l.startsWith("draining ["));
  assert.equal(barRows.length, 1, `the bar is on one line, drawn in place:\n${screen.join("\n")}`);
  assert.match(barRows[0]!, /100% \| 3,000\/3,000 messages .* ETA 0s$/);
  const at = screen.indexOf(barRows[0]!);
  assert.match(screen[at + 1] ?? "", /INFO: process usage/, "the closing line comes after the final bar, and no bar after it");
  assert.ok(screen.some((l) => /^\[\d\d:\d\d:\d\d\] INFO: pipeline stopped/.test(l)), `readable log lines:\n${screen.join("\n")}`);
});

const noTmux = spawnSync("tmux", ["-V"]).status === 0 ? false : "no tmux to watch masq top in";

/** A running `masq run` (the service, with its metrics listener on a free port) that has taken `events` from a queue. */
async function runningMasq(events: readonly SyntheticEvent[]): Promise<{ proc: MasqProcess; metricsUrl: string; stop(): Promise<void> }> {
  const queueUrl = sqs.newQueue();
  await sendBodies(sqs.client, queueUrl, events.map((e) => e.body));
  const env = masqEnv({ queueUrl, sqsEndpoint: sqs.endpoint, databaseUrl: t.url, extra: { MASQ_WAIT_TIME_SECONDS: "1" } });
  const proc = spawnMasq(["run"], env);
  const port = () => {
    const l = proc.lines.find((x) => x.includes("HTTP listener"));
    return l === undefined ? undefined : (JSON.parse(l) as { port: number }).port;
  };
  await waitFor(() => port() !== undefined, 30_000, "the HTTP listener");
  const metricsUrl = `http://127.0.0.1:${port()}/metrics`;
  const deleted = async () => Number(/^masq_messages_deleted_total (\d+)$/m.exec(await (await fetch(metricsUrl)).text())?.[1]);
  await waitFor(async () => (await deleted()) === events.length, 60_000, "every message deleted");
  return {
    proc,
    metricsUrl,
    async stop() {
      proc.child.kill("SIGTERM");
      await proc.exited;
    },
  };
}

test("masq top on a terminal (tmux): a live view of a running masq; says when the endpoint is gone and retries; q, Ctrl-C and SIGTERM restore the terminal", { skip: noTmux }, async () => {
  const events = uniqueEvents(1500, 81);
  const want = expectedCounts(events);
  const masq = await runningMasq(events);
  // A server of its own (-L): nothing of anyone else's tmux is touched, and kill-server ends only this one.
  const socket = `masq-top-test-${process.pid}`;
  const tmux = (...args: string[]) => spawnSync("tmux", ["-L", socket, ...args], { encoding: "utf8" });
  const screen = () => tmux("capture-pane", "-p", "-t", "top").stdout;
  try {
    const shell = `printf 'before top\\n'; '${process.execPath}' '${MASQ_BIN}' top --url '${masq.metricsUrl}'; echo "top-exit=$?"; sleep 120`;
    const started = tmux("new-session", "-d", "-s", "top", "-x", "100", "-y", "30", "-e", `PATH=${process.env.PATH}`, "-e", "TERM=xterm-256color", "sh", "-c", shell);
    assert.equal(started.status, 0, started.stderr);
    // Rates need two scrapes: wait for the second drawing.
    await waitFor(() => /^ {2}received +1,500 +0\.0$/m.test(screen()), 30_000, `the view with its rates:\n${screen()}`);
    const view = screen();
    assert.match(view, new RegExp(`^masq top  ${masq.metricsUrl.replace(/[.]/g, "\\.")}  \\d\\d:\\d\\d:\\d\\d UTC  \\(q to quit\\)$`, "m"));
    assert.match(view, new RegExp(`^ {2}written +${want.valid.toLocaleString("en-US")} +0\\.0$`, "m"));
    const reasons = Object.entries(want.byReason).sort(([a], [b]) => a.localeCompare(b)).map(([r, k]) => `${r} ${k}`).join(", ");
    assert.match(view, new RegExp(`^quarantined by reason: ${reasons}$`, "m"));
    assert.match(view, /^in flight {5}0 {4}queue \(polled every 15 s\): [\d,]+ visible, [\d,]+ in flight, [\d,]+ delayed$/m);
    assert.match(view, /^lag {11}p50 [\d.]+ m?s, p99 [\d.]+ m?s \(since start\)/m);
    assert.match(view, /^keys {10}pseudonym key v1, master key local:[0-9a-f]{16}, 1 data key\(s\) made$/m);
    assert.equal(tmux("display", "-p", "-t", "top", "#{alternate_on} #{cursor_flag}").stdout.trim(), "1 0", "the alternate screen, cursor hidden");

    // The service stops: the view says so in one line, naming the URL and the setting, and keeps trying.
    await masq.stop();
    await waitFor(() => screen().includes("masq: cannot reach the metrics endpoint"), 30_000, `the unreachable line:\n${screen()}`);
    const gone = screen().split("\n").filter((l) => l.startsWith("masq: "));
    assert.equal(gone.length, 1, screen());
    assert.ok(gone[0]!.startsWith(`masq: cannot reach the metrics endpoint ${masq.metricsUrl} (--url): ECONNREFUSED;`), gone[0]!);

    tmux("send-keys", "-t", "top", "q");
    await waitFor(() => screen().includes("top-exit=0"), 30_000, `masq top to exit on q:\n${screen()}`);
    const after = screen();
    assert.match(after, /^before top$/m, "the shell's screen is back");
    assert.ok(!after.includes("masq top  http"), `the view is gone with the alternate screen:\n${after}`);
    assert.equal(tmux("display", "-p", "-t", "top", "#{alternate_on} #{cursor_flag}").stdout.trim(), "0 1", "normal screen, cursor shown");

    // Ctrl-C (a key in raw mode) and SIGTERM end it the same way, the terminal restored.
    for (const how of ["C-c", "SIGTERM"]) {
      const name = `top-${how}`;
      const shell = `printf 'before top\n'; '${process.execPath}' '${MASQ_BIN}' top --url '${masq.metricsUrl}'; echo "top-exit=$?"; sleep 120`;
      assert.equal(tmux("new-session", "-d", "-s", name, "-x", "100", "-y", "30", "-e", "TERM=xterm-256color", "sh", "-c", shell).status, 0);
      const pane = () => tmux("capture-pane", "-p", "-t", name).stdout;
      await waitFor(() => pane().includes("masq: cannot reach the metrics endpoint"), 30_000, `the view (${how}):\n${pane()}`);
      if (how === "C-c") tmux("send-keys", "-t", name, "C-c");
      else {
        // The shell's child is masq top (node).
        const shellPid = tmux("display", "-p", "-t", name, "#{pane_pid}").stdout.trim();
        const topPid = spawnSync("ps", ["-o", "pid=", "--ppid", shellPid], { encoding: "utf8" }).stdout.trim();
        process.kill(Number(topPid), "SIGTERM");
      }
      await waitFor(() => pane().includes("top-exit="), 30_000, `masq top to exit on ${how}:\n${pane()}`);
      assert.match(pane(), /^top-exit=0$/m, `exit 0 on ${how}`);
      assert.match(pane(), /^before top$/m);
      assert.equal(tmux("display", "-p", "-t", name, "#{alternate_on} #{cursor_flag}").stdout.trim(), "0 1", `the terminal restored (${how})`);
    }
  } finally {
    tmux("kill-server");
    await masq.stop();
  }
});


test("masq top without a terminal prints one JSON snapshot of the running masq; an endpoint it cannot reach is one line, exit 1", async () => {
  const events = uniqueEvents(600, 82);
  const want = expectedCounts(events);
  const masq = await runningMasq(events);
  try {
    const top = spawnMasq(["top", "--url", masq.metricsUrl], { PATH: process.env.PATH });
    assert.equal((await top.exited).code, 0, top.lines.join("\n"));
    const s = JSON.parse(top.lines.join("\n")) as TopSnapshot;
    assert.deepEqual(s.messages, { received: events.length, written: want.valid, quarantined: events.length - want.valid, duplicates: 0, deleted: events.length });
    assert.deepEqual(s.quarantinedByReason, want.byReason);
    assert.deepEqual({ ...s.rates, intervalSeconds: 1 }, { received: 0, written: 0, quarantined: 0, deleted: 0, intervalSeconds: 1 }, "idle: nothing in the last second");
    assert.equal(s.inFlight, 0);
    assert.ok(s.batches.count > 0 && s.batches.meanSize! > 0);
    assert.ok(s.lagSeconds !== null && s.lagSeconds.p99 >= s.lagSeconds.p50);
    assert.equal(s.keys.pseudonymKeyVersion, 1);
    assert.match(s.keys.masterKey ?? "", /^local:[0-9a-f]{16}$/);
  } finally {
    await masq.stop();
  }
  const gone = spawnMasq(["top"], { PATH: process.env.PATH, MASQ_HTTP_PORT: new URL(masq.metricsUrl).port });
  assert.equal((await gone.exited).code, 1);
  assert.deepEqual(gone.lines, [
    `masq: cannot reach the metrics endpoint ${masq.metricsUrl} (MASQ_HTTP_PORT): ECONNREFUSED; is masq run running there with its HTTP listener (MASQ_HTTP_PORT)?`,
  ]);
});
