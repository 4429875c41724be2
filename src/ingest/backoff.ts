import { FatalError, InterruptedError, TransientError, UnreachableError, type ErrorHelp } from "../errors.ts";

/** Exponential backoff with full jitter: a random delay up to base·2^attempt, capped. Never zero. */
export function backoffMs(attempt: number, baseMs = 200, capMs = 30_000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.max(baseMs / 2, Math.random() * ceiling);
}

/** Resolves after ms, or at once when the signal aborts. Never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Calls fn until it succeeds, backing off on TransientError; any other error is thrown at once.
 * Used at start-up, where a service started before its database should wait for it, not crash. With deadlineMs
 * (one-shot commands: MASQ_CONNECT_TIMEOUT_SECONDS) it gives up once that much time has passed, with an
 * UnreachableError naming what it waited for; a signal ends the wait with an InterruptedError.
 */
export async function retryTransient<T>(
  fn: () => Promise<T>,
  opts: {
    what: string;
    signal?: AbortSignal;
    onRetry?: (err: Error, delayMs: number) => void;
    isTransient: (err: unknown) => boolean;
    deadlineMs?: number | undefined;
    /** The setting and host:port waited for, when the error does not name them itself. */
    object?: string | undefined;
  },
): Promise<T> {
  const started = Date.now();
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!opts.isTransient(err) || opts.signal?.aborted) throw err;
      let delay = backoffMs(attempt, 500, 10_000);
      if (opts.deadlineMs !== undefined) {
        const left = opts.deadlineMs - (Date.now() - started);
        if (left <= 0) throw gaveUp(err, opts.what, opts.object, opts.deadlineMs);
        delay = Math.min(delay, left);
      }
      opts.onRetry?.(err as Error, delay);
      await sleep(delay, opts.signal);
      if (opts.signal?.aborted) throw interrupted(err, opts.what, opts.object, opts.signal);
    }
  }
}

function helpOf(err: unknown): ErrorHelp {
  return err instanceof TransientError || err instanceof FatalError ? err.help : {};
}

function gaveUp(err: unknown, what: string, object: string | undefined, deadlineMs: number): UnreachableError {
  const h = helpOf(err);
  const last = h.hint ?? (err instanceof Error ? err.message : String(err));
  const e = new UnreachableError(`${what}: gave up after ${Math.round(deadlineMs / 1000)} s`, {
    what: h.what === undefined ? `gave up ${what} after ${Math.round(deadlineMs / 1000)} s` : `${h.what} within ${Math.round(deadlineMs / 1000)} s`,
    object: h.object ?? object,
    hint: `${last}; check that the server runs and that the setting names it, or wait longer with MASQ_CONNECT_TIMEOUT_SECONDS`,
  });
  // The Lambda handler tells a cold start that could not reach Postgres by this cause.
  e.cause = err;
  return e;
}

/** The signal aborts with the signal's name (commands/signals.ts); any other reason (a timeout) is a deadline. */
function interrupted(err: unknown, what: string, object: string | undefined, signal: AbortSignal): InterruptedError | UnreachableError {
  const reason: unknown = signal.reason;
  if (reason !== "SIGINT" && reason !== "SIGTERM") {
    const e = new UnreachableError(`${what}: interrupted`, { ...helpOf(err), object: helpOf(err).object ?? object });
    e.cause = err;
    return e;
  }
  const h = helpOf(err);
  const e = new InterruptedError(`${what}: interrupted`, reason, {
    what: `interrupted while ${what}`,
    object: h.object ?? object,
    hint: `${h.what ?? "the server was not reachable"}; nothing was done`,
  });
  e.cause = err;
  return e;
}
