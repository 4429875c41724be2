import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import { createProgress } from "../../src/progress/progress.ts";

/** A stream standing in for a terminal, and what was written to it so far. */
function capture(): { stream: NodeJS.WriteStream; text: () => string } {
  let written = "";
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      written += chunk.toString();
      cb();
    },
  }) as unknown as NodeJS.WriteStream;
  return { stream, text: () => written };
}

test("no progress bar unless a person is watching (stdout and stderr terminals, not CI)", () => {
  // Under the test runner stdout is a pipe.
  assert.equal(createProgress("draining"), undefined);
});

test("the bar shows done/total, rate and ETA, sized by what is held and what still waits in the queue", async () => {
  const { stream, text } = capture();
  const p = createProgress("draining", { stream, force: true })!;
  p.setBacklog(900);
  p.inFlight(100);
  p.committed({ size: 100, seconds: 0.01, written: 95, duplicates: 0, quarantinedByReason: { invalid_json: 5 }, lagSeconds: [] });
  p.inFlight(0);
  await new Promise((r) => setTimeout(r, 300));
  p.stop();
  assert.match(text(), /draining \[/);
  assert.match(text(), /100\/1000 messages/);
  assert.match(text(), /\d+ msg\/s/);
  assert.match(text(), /ETA/);
});

test("a bar can count other things than messages (a key rotation counts values, bodies or blocks)", async () => {
  const { stream, text } = capture();
  const p = createProgress("table pass", { stream, force: true, unit: "blocks" })!;
  p.setBacklog(30);
  p.committed({ size: 10, seconds: 0, written: 0, duplicates: 0, quarantinedByReason: {}, lagSeconds: [] });
  await new Promise((r) => setTimeout(r, 300));
  p.stop();
  assert.match(text(), /10\/40 blocks/);
  assert.match(text(), /\d+ blocks\/s/);
});
