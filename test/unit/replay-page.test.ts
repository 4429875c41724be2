import assert from "node:assert/strict";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadContract } from "../../src/contracts/contract.ts";
import { planContract } from "../../src/ingest/contract-plan.ts";
import { contractRoute } from "../../src/lifecycle/replay-contract.ts";
import { loginRoute } from "../../src/lifecycle/replay-login.ts";
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

test("each replay route reads a record's body only where it keeps one: a contract's db_rejected record is never guessed from its masked row", async () => {
  const file = fileURLToPath(new URL("../../contracts/examples/purchase.yaml", import.meta.url));
  const routes = { login: loginRoute({ schema: "public", name: "user_logins" }), contract: contractRoute(planContract(loadContract(file).contract!, file)) };
  const loginRow = JSON.stringify({ userId: "u-1", deviceType: "ios", maskedIp: "a".repeat(64), maskedDeviceId: "b".repeat(64), locale: null, appVersion: 1, createDate: "2026-12-06" });
  const contractRow = JSON.stringify({ order_id: "o-1", masked_email: "c".repeat(64) });
  const record = (reason: string, body: string | null, has_original: boolean) => ({ message_id: `${reason}-${String(has_original)}`, reason, body, sent_at: null, received_at: new Date(), has_original });
  // route, record, with a corrected body → [fromBody, loads, cannot, rowsOnly] (no body read: nothing decrypted here)
  const cases: [keyof typeof routes, ReturnType<typeof record>, boolean, [boolean, number, number, number]][] = [
    ["login", record("wrong_type", null, true), false, [true, 0, 0, 0]],
    ["login", record("wrong_type", null, false), false, [false, 0, 1, 0]],
    ["login", record("db_rejected", loginRow, false), false, [false, 1, 0, 0]],
    ["login", record("db_rejected", loginRow, false), true, [true, 0, 0, 0]],
    ["contract", record("unclassified_field", null, true), false, [true, 0, 0, 0]],
    ["contract", record("unprocessable", null, false), false, [false, 0, 1, 0]],
    ["contract", record("db_rejected", contractRow, false), false, [false, 0, 0, 1]],
    ["contract", record("db_rejected", contractRow, false), true, [true, 0, 0, 0]],
  ];
  for (const [name, r, corrected, [fromBody, loads, cannot, rowsOnly]] of cases) {
    const route = routes[name];
    assert.equal(route.fromBody(r, corrected), fromBody, `${name} ${r.message_id} corrected=${String(corrected)}`);
    const page = await route.prepare([r], new Map(), undefined, { seal: false, corrected });
    assert.deepEqual([page.loads, page.cannot, page.rowsOnly], [loads, cannot, rowsOnly], `${name} ${r.message_id} corrected=${String(corrected)}`);
  }
  assert.equal(routes.login.contract, false);
  assert.equal(routes.contract.contract, true);
});
