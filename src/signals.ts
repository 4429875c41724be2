/**
 * Two-step shutdown: the first SIGTERM or SIGINT asks for a graceful stop (finish and commit the current batches,
 * delete, exit 0); a second one exits at once with 128 + the signal number. Uncommitted messages simply reappear.
 */
export function onShutdownSignals(handlers: { first: (signal: NodeJS.Signals) => void; second?: (signal: NodeJS.Signals) => void }): { dispose(): void } {
  let received = 0;
  const handle = (signal: NodeJS.Signals) => {
    received++;
    if (received === 1) return handlers.first(signal);
    handlers.second?.(signal);
    process.exit(128 + (signal === "SIGINT" ? 2 : 15));
  };
  process.on("SIGTERM", handle);
  process.on("SIGINT", handle);
  return {
    dispose() {
      process.off("SIGTERM", handle);
      process.off("SIGINT", handle);
    },
  };
}
