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
 * Used at start-up, where a service started before its database should wait for it, not crash.
 */
export async function retryTransient<T>(
  fn: () => Promise<T>,
  opts: { what: string; signal?: AbortSignal; onRetry?: (err: Error, delayMs: number) => void; isTransient: (err: unknown) => boolean },
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!opts.isTransient(err) || opts.signal?.aborted) throw err;
      const delay = backoffMs(attempt, 500, 10_000);
      opts.onRetry?.(err as Error, delay);
      await sleep(delay, opts.signal);
      if (opts.signal?.aborted) throw new Error(`${opts.what}: interrupted`, { cause: err });
    }
  }
}
