import assert from "node:assert/strict";
import { test } from "node:test";
import { Metrics } from "../../src/ops/metrics.ts";
import { formatTop, parseMetrics, topSnapshot } from "../../src/ops/top.ts";

/** masq top reads what Metrics exports: the same registry, its text parsed back, two scrapes for rates. */
test("a snapshot of Metrics' own /metrics text: totals, reasons, rates over the interval, lag quantiles, keys", async () => {
  const m = new Metrics({ defaultMetrics: false });
  const batch = (size: number, lag: number) => ({ size, seconds: 0.02, written: size - 2, duplicates: 0, quarantinedByReason: { invalid_ip: 1, invalid_json: 1 }, lagSeconds: Array<number>(size).fill(lag) });
  m.keysInUse("local:0123456789abcdef", 3);
  m.received(100, new Date());
  m.committed(batch(100, 0.2));
  m.deleted(100);
  const first = parseMetrics(await m.registry.metrics());
  m.received(50, new Date());
  m.committed(batch(50, 3));
  m.deleted(50);
  m.retried("pg_connection");
  m.inFlight(7);
  m.pseudonymKeyInUse(4);
  const s = topSnapshot("http://x/metrics", new Date(), parseMetrics(await m.registry.metrics()), { samples: first, intervalSeconds: 2 });
  assert.deepEqual(s.messages, { received: 150, written: 146, quarantined: 4, duplicates: 0, deleted: 150 });
  assert.deepEqual(s.quarantinedByReason, { invalid_ip: 2, invalid_json: 2 });
  assert.deepEqual(s.rates, { received: 25, written: 24, quarantined: 1, deleted: 25, intervalSeconds: 2 });
  assert.equal(s.inFlight, 7);
  assert.deepEqual(s.batches, { count: 2, meanSize: 75, lastIntervalMeanSize: 50, meanCommitSeconds: 0.02 });
  // 100 lags in the 0.1-0.25 bucket, 50 in the 2.5-5 bucket: the median in the first, p99 in the second.
  assert.ok(s.lagSeconds!.p50 > 0.1 && s.lagSeconds!.p50 <= 0.25, String(s.lagSeconds!.p50));
  assert.ok(s.lagSeconds!.p99 > 2.5 && s.lagSeconds!.p99 <= 5, String(s.lagSeconds!.p99));
  assert.deepEqual(s.retries, { pg_connection: 1 });
  assert.deepEqual(s.keys, { pseudonymKeyVersion: 4, masterKey: "local:0123456789abcdef", dataKeysGenerated: 0 });
  assert.equal(s.queue, null, "not polled yet");
  const screen = formatTop(s, { url: s.url, time: new Date() });
  assert.ok(screen.every((l) => l.length <= 100), screen.join("\n"));
  assert.ok(screen.includes("  received               150        25.0"), screen.join("\n"));
});

test("the first scrape has no rates; an empty page gives zeros and nulls, not NaN", () => {
  const s = topSnapshot("http://x/metrics", new Date(), parseMetrics(""));
  assert.equal(s.rates, null);
  assert.equal(s.lagSeconds, null);
  assert.equal(s.lastCommitSecondsAgo, null);
  // (JSON.stringify would print NaN as null: look at the numbers themselves.)
  const numbers = (v: unknown): number[] => (typeof v === "number" ? [v] : v !== null && typeof v === "object" ? Object.values(v).flatMap(numbers) : []);
  assert.deepEqual(numbers(s).filter((x) => !Number.isFinite(x)), []);
  assert.ok(formatTop(s, { url: s.url, time: new Date() }).every((l) => !/NaN|undefined/.test(l)));
});
