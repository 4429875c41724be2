import assert from "node:assert/strict";
import { test } from "node:test";
import { REPLAY_PAGE_BYTES, withinBytes } from "../../src/lifecycle/replay-quarantine.ts";

const MiB = 1024 * 1024;
const records = (lengths: (number | null)[]) => lengths.map((body_length, i) => ({ message_id: `m${i}`, body_length }));

test("a replay page holds at most REPLAY_PAGE_BYTES of originals: 1,000 bodies of 1 MiB go 32 at a time", () => {
  const page = withinBytes(records(Array.from({ length: 1000 }, () => MiB)), REPLAY_PAGE_BYTES);
  assert.equal(page.length, 32);
  assert.deepEqual(page.at(-1), { message_id: "m31", body_length: MiB });
});

test("a replay page always makes progress, keeps order, and counts a record without an original as nothing", () => {
  const cases: [(number | null)[], number, number][] = [
    [[40 * MiB, 1], 32 * MiB, 1], // one record larger than the cap still goes, alone
    [[10, 20, 30], 60, 3],
    [[10, 20, 31], 60, 2],
    [[null, null, 5], 5, 3],
    [[null, null, 5], 4, 2],
    [[], 10, 0],
  ];
  for (const [lengths, max, want] of cases) {
    const page = withinBytes(records(lengths), max);
    assert.equal(page.length, want, JSON.stringify(lengths));
    assert.deepEqual(page.map((r) => r.message_id), records(lengths).slice(0, want).map((r) => r.message_id));
  }
});
