import type pg from "pg";
import type { TableName } from "../../src/db/tables.ts";
import { writeBatch } from "../../src/ingest/write-batch.ts";
import { batchLength, type SealedBatch } from "../../src/ingest/batch.ts";

export interface PgCeilingResult {
  messages: number;
  seconds: number;
  perSecond: number;
  batches: number;
  written: number;
  quarantined: number;
  /** CPU time of the writing client (this process, which does nothing else meanwhile) per message, in µs. */
  clientCpuUsPerMessage: number;
}

/**
 * The Postgres ceiling: the same rows masq would write (validated, masked and sealed beforehand, off the clock),
 * through masq's own statement (writeBatch: ledger, rows, quarantine and vault in one set-based statement), in masq's batch size,
 * with masq's number of concurrent writers. Nothing else: no SQS, no parsing, no masking.
 */
export async function measurePgCeiling(pool: pg.Pool, table: TableName, sealed: readonly SealedBatch[], opts: { writers: number }): Promise<PgCeilingResult> {
  const messages = sealed.reduce((n, b) => n + batchLength(b), 0);
  // Open the writers' connections before the clock starts, as a running masq would have them open.
  const clients = await Promise.all(Array.from({ length: opts.writers }, () => pool.connect()));
  await Promise.all(clients.map((c) => c.query("SELECT 1")));
  for (const c of clients) c.release();

  let next = 0;
  let batches = 0;
  let written = 0;
  let quarantined = 0;
  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  const writer = async () => {
    for (;;) {
      const batch = sealed[next++];
      if (batch === undefined) return;
      const r = await writeBatch(pool, table, batch);
      batches++;
      written += r.written;
      quarantined += r.quarantined;
    }
  };
  await Promise.all(Array.from({ length: opts.writers }, writer));
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  return { messages, seconds, perSecond: messages / seconds, batches, written, quarantined, clientCpuUsPerMessage: (cpu.user + cpu.system) / messages };
}
