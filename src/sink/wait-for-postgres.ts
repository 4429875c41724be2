import { TransientError } from "../errors.ts";
import { retryTransient } from "../ingest/backoff.ts";
import type { Db } from "./db.ts";
import { classifyPgError } from "./pg-errors.ts";
import { targetText } from "./pg-target.ts";

/**
 * The first contact of a one-shot command with Postgres: waits for a server that is not reachable yet, at most
 * deadlineMs (MASQ_CONNECT_TIMEOUT_SECONDS), and turns a mistake in the settings (password, database, role, TLS)
 * into an error naming the setting before any work starts.
 */
export async function waitForPostgres(db: Db, opts: { deadlineMs: number; signal?: AbortSignal | undefined; onWait?: (text: string) => void }): Promise<void> {
  let waiting = false;
  await retryTransient(
    async () => {
      try {
        await db.pool.query("SELECT 1");
      } catch (err) {
        throw classifyPgError(err, db.target);
      }
    },
    {
      what: "connecting to Postgres",
      isTransient: (e) => e instanceof TransientError,
      deadlineMs: opts.deadlineMs,
      object: targetText(db.target),
      // Once, when the first attempt failed: a person then knows why nothing happens for up to deadlineMs.
      onRetry: () => {
        if (!waiting) opts.onWait?.(`waiting for Postgres at ${db.target.where} (${db.target.setting}), up to ${Math.round(opts.deadlineMs / 1000)} s`);
        waiting = true;
      },
      ...(opts.signal ? { signal: opts.signal } : {}),
    },
  );
}

/** The "waiting for Postgres at …" line of a one-shot command, on stderr (stdout keeps the command's output). */
export function sayWaiting(text: string): void {
  process.stderr.write(`masq: ${text}\n`);
}
