import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { after, before, test } from "node:test";
import { generateEvents } from "../../src/demo/synthetic.ts";
import { sendBodies } from "../../src/demo/send-events.ts";
import { MASQ_BIN, masqEnv } from "../helpers/masq-process.ts";
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
