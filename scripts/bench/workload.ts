import { randomBytes, randomUUID } from "node:crypto";
import { generateEvents } from "../../src/ops/synthetic-events.ts";
import type pg from "pg";
import { prepareOutcome } from "../../src/ingest/prepare.ts";
import type { SealedBatch } from "../../src/ingest/batch.ts";
import { IngestKeys } from "../../src/keys/ingest-keys.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";

/**
 * The local master key of one benchmark run: masq's pseudonym key is created wrapped under it on the first phase, so
 * every later phase (masq, the Postgres ceiling, the statement cost) must use the same one.
 */
export const BENCH_KEY = randomBytes(32);

/** The messages of one run and what masq must make of them. */
export interface Workload {
  bodies: string[];
  valid: number;
  malformed: number;
  /** Expected quarantine records by reason code. */
  byReason: Record<string, number>;
}

/**
 * Realistic login events (src/ops/synthetic-events.ts: skewed repeats of devices and addresses, IPv4 and IPv6, null
 * locales, every kind of malformed message). The one change: each valid event's user_id is made unique while
 * keeping its UUID shape (the last group holds the message's index), so count(DISTINCT user_id) = count(*) proves
 * that no message was written twice. user_id is not masked, so this changes no work masq does.
 */
export function makeWorkload(count: number, opts: { seed: number; malformedRate: number }): Workload {
  const events = generateEvents(count, { seed: opts.seed, malformedRate: opts.malformedRate });
  const byReason: Record<string, number> = {};
  let valid = 0;
  const bodies = events.map((e, i) => {
    if (e.expectedReason !== null) {
      byReason[e.expectedReason] = (byReason[e.expectedReason] ?? 0) + 1;
      return e.body;
    }
    valid++;
    const obj = JSON.parse(e.body) as { user_id: string };
    obj.user_id = `${obj.user_id.slice(0, 24)}${i.toString(16).padStart(12, "0")}`;
    return JSON.stringify(obj);
  });
  return { bodies, valid, malformed: count - valid, byReason };
}

/**
 * The workload as masq would hand it to the sink: validated, masked and sealed (vault rows encrypted), in batches,
 * with masq's own keys (the local provider, the pseudonym key masq creates on first run). Built before the Postgres
 * ceiling's clock starts, so that ceiling measures the database and nothing else.
 */
export async function presealedBatches(pool: pg.Pool, w: Workload, masterKey: Uint8Array, batchSize: number): Promise<SealedBatch[]> {
  const now = new Date();
  const provider = new LocalKeyProvider(Uint8Array.from(masterKey));
  const keys = await IngestKeys.open({ pool, provider });
  try {
    const batches: SealedBatch[] = [];
    for (let i = 0; i < w.bodies.length; i += batchSize) {
      const outcomes = w.bodies.slice(i, i + batchSize).map((body) => prepareOutcome({ messageId: randomUUID(), body, sentAt: now, receivedAt: now }, keys.pseudonym.pseudonymizer));
      batches.push(await keys.sealer.seal(outcomes, keys.pseudonym.version));
    }
    return batches;
  } finally {
    keys.close();
    provider.close();
  }
}
