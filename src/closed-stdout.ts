import { errorLine } from "./errors.ts";

/**
 * A reader that stops early (`masq check | head -1`) closes masq's stdout, and the next write fails with EPIPE. That
 * is the reader's choice, not a failure of the command: masq stops quietly with the status a Unix tool killed by
 * SIGPIPE leaves (141, as `yes | head -1` leaves for yes). Where the output was a reveal, stderr says so: its audit
 * row committed before anything was written, and it stays (it records what was asked, whatever was read).
 */
let revealed: { what: string; auditSeq: string | undefined } | undefined;

/** What is about to be written reveals originals under this audit row (undefined: the row's number is not at hand). */
export function revealing(what: string, auditSeq?: string): void {
  revealed = { what, auditSeq };
}

export function isClosedPipe(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === "EPIPE";
}

/** A write to stdout already failed because the reader went away (the 'error' event may not have been emitted yet). */
export function stdoutWasClosed(): boolean {
  return isClosedPipe(process.stdout.errored);
}

/**
 * Resolves once everything written to stdout has reached the reader: a pipe takes what fits and Node queues the rest,
 * which exiting at once would drop. A reader that went away meanwhile ends the process here (stopOnClosedStdout).
 */
export async function flushStdout(): Promise<void> {
  // Nothing queued: exit in this turn of the event loop, as before (the demo's embedded Postgres has its own signal
  // hooks that exit with 128+n if given a turn after a Ctrl-C the demo already handled).
  if (process.stdout.destroyed || process.stdout.writableLength === 0) return;
  const err = await new Promise<Error | null | undefined>((resolve) => process.stdout.write("", resolve));
  if (isClosedPipe(err)) stopOnClosedStdout();
}

/** The one handler of a closed stdout, for every command: installed once, before any command writes. */
export function watchStdout(): void {
  process.stdout.on("error", (err) => {
    if (isClosedPipe(err)) stopOnClosedStdout();
    process.stderr.write(`${errorLine(err)}\n`);
    process.exit(1);
  });
}

export function stopOnClosedStdout(): never {
  if (revealed !== undefined) {
    const record = revealed.auditSeq === undefined ? "the audit trail records it (masq audit list)" : `audit row ${revealed.auditSeq} records it`;
    try {
      process.stderr.write(`masq: stdout was closed before the ${revealed.what} was complete (the reader stopped reading): what was written before may have been read; ${record}\n`);
    } catch {
      // stderr gone too: the exit status still tells.
    }
  }
  // 128 + SIGPIPE.
  process.exit(128 + 13);
}
