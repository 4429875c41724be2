import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, test } from "node:test";
import { createLogger } from "../../src/log.ts";
import { Estimate, formatBar, formatEta, LiveLine, createProgress } from "../../src/ops/progress.ts";
import { FakeTerminal } from "../helpers/terminal.ts";

const batch = (size: number) => ({ size, seconds: 0.01, written: size, duplicates: 0, quarantinedByReason: {}, lagSeconds: [] });
const UNIT = { total: "messages", rate: "msg/s" };
// eslint-disable-next-line no-control-regex
const plain = (text: string) => text.replace(/\x1b\[[0-9;]*m/g, "");

describe("the estimate behind the bar", () => {
  test("the total starts at what the queue held and never exceeds it while nothing more arrives", () => {
    // 50,000 messages; each second masq commits 1,000, holds 2,000 (1,000 of them committed, not yet deleted), and
    // the queue's counts lag a second behind.
    const e = new Estimate(50_000, 0);
    let deleted = 0;
    for (let t = 1; t <= 50; t++) {
      e.add(1_000, t * 1000);
      e.atLeast(deleted + Math.min(2_000, 50_000 - deleted)); // held + deleted, as progress.ts counts
      e.atLeast(deleted + (50_000 - deleted)); // the queue's visible + in flight, read when `deleted` were gone
      deleted += 1_000;
      assert.equal(e.snapshot(t * 1000).total, 50_000, `at ${t} s`);
    }
    assert.equal(e.snapshot(50_000).done, 50_000);
  });

  test("the total grows when more arrives than was there at the start", () => {
    const e = new Estimate(1_000, 0);
    e.add(500, 1000);
    e.atLeast(500 + 900);
    assert.equal(e.snapshot(1000).total, 1_400);
    e.atLeast(1_200); // an older, smaller count never shrinks it
    assert.equal(e.snapshot(1000).total, 1_400);
    e.add(1_000, 2000); // more done than anyone counted
    assert.equal(e.snapshot(2000).total, 1_500);
  });

  test("ETA: none before there is a rate, then what is left at the recent rate, and 0 when done", () => {
    const e = new Estimate(10_000, 0);
    assert.equal(e.snapshot(0).etaSeconds, undefined);
    assert.equal(formatEta(e.snapshot(0).etaSeconds), "--");
    for (let t = 1; t <= 5; t++) e.add(1_000, t * 1000);
    const s = e.snapshot(5000);
    assert.equal(s.rate, 1_000);
    assert.equal(s.etaSeconds, 5);
    e.add(5_000, 6000);
    assert.equal(e.snapshot(6000).etaSeconds, 0);
  });

  test("the rate follows a slowdown: it is measured over the last seconds, not since the start", () => {
    const e = new Estimate(1_000_000, 0);
    for (let t = 1; t <= 20; t++) e.add(10_000, t * 1000);
    for (let t = 21; t <= 40; t++) e.add(1_000, t * 1000);
    const s = e.snapshot(40_000);
    assert.ok(s.rate > 900 && s.rate < 1_300, `rate ${s.rate}`);
    assert.ok(Number.isFinite(s.etaSeconds));
  });

  test("finish(): the total is what was done, so the bar ends at 100%", () => {
    const e = new Estimate(51_000, 0);
    e.add(50_000, 1000);
    e.finish();
    assert.deepEqual([e.snapshot(1000).done, e.snapshot(1000).total], [50_000, 50_000]);
  });
});

describe("the bar's line", () => {
  test("shows done/total, percent, rate and ETA", () => {
    const line = formatBar("draining", { done: 26_000, total: 50_000, rate: 4_210.4, etaSeconds: 5.7 }, UNIT, 100);
    assert.match(line, /^draining \[█+░+\] 52% \| 26,000\/50,000 messages \| 4,210 msg\/s \| ETA 6s$/);
  });

  for (const columns of [20, 40, 60, 80, 120, 200]) {
    test(`never wider than a terminal of ${columns} columns (a wrapped line cannot be redrawn)`, () => {
      const line = formatBar("table pass", { done: 123_456_789, total: 987_654_321, rate: 99_999, etaSeconds: 86_000 }, { total: "blocks", rate: "blocks/s" }, columns);
      assert.ok(line.length <= columns - 1, `${line.length}: ${line}`);
    });
  }

  test("ETA text: seconds, minutes, hours", () => {
    assert.deepEqual([formatEta(0), formatEta(59.2), formatEta(185), formatEta(3720), formatEta(Infinity)], ["0s", "1m 00s", "3m 05s", "1h 02m", "--"]);
  });
});

describe("on a terminal", () => {
  test("no progress bar unless a person is watching (stdout and stderr terminals, not CI)", () => {
    // Under the test runner stdout is a pipe.
    assert.equal(createProgress("draining"), undefined);
  });

  test("log lines print above the bar, never into it, and the bar ends on a line of its own", () => {
    const term = new FakeTerminal(100);
    const line = new LiveLine(term);
    let t = 0;
    const logger = createLogger("info", term as unknown as NodeJS.WritableStream, "pretty", line);
    const bar = createProgress("draining", { line, force: true, total: 3_000, now: () => t })!;
    for (let i = 1; i <= 3; i++) {
      t += 1000;
      bar.inFlight(1000);
      bar.committed(batch(1000));
      bar.deleted(1000);
      bar.inFlight(0);
      logger.info({ committed: i * 1000 }, "progress");
    }
    logger.info({ received: 3000 }, "drained");
    bar.stop({ complete: true });
    logger.info("process usage");
    term.write("$ ");
    const screen = term.lines();
    assert.deepEqual(
      screen.map((l) => (l.startsWith("draining") ? "BAR" : l.replace(/^\[\d\d:\d\d:\d\d\] /, ""))),
      ['INFO: progress {"committed":1000}', 'INFO: progress {"committed":2000}', 'INFO: progress {"committed":3000}', 'INFO: drained {"received":3000}', "BAR", "INFO: process usage", "$ "],
    );
    assert.match(screen[4]!, /100% \| 3,000\/3,000 messages \| 1,000 msg\/s \| ETA 0s$/);
    // Every drawing of the bar had the real total: never more than what the queue held.
    for (const d of term.drawings.filter((l) => l.startsWith("draining"))) assert.match(d, /\/3,000 messages/);
  });

  test("a pass that finishes within half a second ends at its real rate, not 0/s (the rotation's vault pass at 100 %)", () => {
    const term = new FakeTerminal();
    let t = 0;
    const bar = createProgress("vault pass", { stream: term, force: true, unit: "values", now: () => t })!;
    t = 150;
    bar.setBacklog(1_093);
    bar.committed(batch(1_000));
    t = 200;
    bar.committed(batch(93));
    t = 400; // the pass's last transaction commits; then the bar stops
    bar.stop();
    assert.match(term.drawings.at(-1)!, /100% \| 1,093\/1,093 values \| 5,465 values\/s \| ETA 0s$/);
  });

  test("after stop, the bar is never drawn again (no stale 100% below the final lines)", async () => {
    const term = new FakeTerminal();
    const bar = createProgress("replaying", { stream: term, force: true, unit: "records", total: 10 })!;
    bar.committed(batch(10));
    bar.stop();
    const after = term.drawings.length;
    bar.committed(batch(5));
    bar.setBacklog(3);
    await new Promise((r) => setTimeout(r, 1_100)); // past the 1 s redraw tick
    assert.equal(term.drawings.length, after);
  });

  test("a long pass shows intermediate progress, not only its first and last state", () => {
    const term = new FakeTerminal();
    let t = 0;
    const bar = createProgress("table pass", { stream: term, force: true, unit: "blocks", now: () => t })!;
    for (let done = 0; done < 100; done += 10) {
      t += 250;
      bar.setBacklog(100 - done);
      bar.committed(batch(10));
    }
    bar.stop();
    const shown = new Set(term.drawings.map((d) => /(\d+)\/100 blocks/.exec(d)?.[1]).filter(Boolean));
    assert.ok(shown.size >= 8, `drawn: ${[...shown].join(", ")}`);
  });
});

describe("log formats", () => {
  function sink(tty: boolean): { stream: NodeJS.WritableStream; text: () => string } {
    let written = "";
    const stream = new Writable({
      write(chunk: Buffer, _enc, cb) {
        written += chunk.toString();
        cb();
      },
    }) as Writable & { isTTY?: boolean };
    stream.isTTY = tty;
    return { stream, text: () => written };
  }

  test("on a terminal: one readable line per event, with its fields", () => {
    const s = sink(true);
    createLogger("info", s.stream).warn({ retryInMs: 500, err: "SQS: connect ECONNREFUSED" }, "SQS not reachable; waiting");
    assert.match(plain(s.text()), /^\[\d\d:\d\d:\d\d\] WARN: SQS not reachable; waiting \{"retryInMs":500,"err":"SQS: connect ECONNREFUSED"\}\n$/);
  });

  test("elsewhere: JSON lines, as before", () => {
    const s = sink(false);
    createLogger("info", s.stream).info({ received: 5 }, "drained");
    const line = JSON.parse(s.text()) as Record<string, unknown>;
    assert.equal(line.msg, "drained");
    assert.equal(line.level, "info");
    assert.equal(line.received, 5);
  });

  test("MASQ_LOG_FORMAT forces either: JSON on a terminal, pretty in a pipe", () => {
    const json = sink(true);
    createLogger("info", json.stream, "json").info("x");
    assert.equal((JSON.parse(json.text()) as { msg: string }).msg, "x");
    const pretty = sink(false);
    createLogger("info", pretty.stream, "pretty").info("x");
    assert.match(pretty.text(), /INFO: x\n$/);
  });

  test("the redaction holds in the readable format too", () => {
    const s = sink(true);
    createLogger("info", s.stream).info({ ip: "203.0.113.9", device_id: "dev-123", body: "{}" }, "oops");
    assert.ok(!s.text().includes("203.0.113.9") && !s.text().includes("dev-123"), s.text());
  });
});
