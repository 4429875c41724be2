import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { MASQ_BIN } from "./masq-process.ts";

export interface MasqRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the real CLI to its end, stdout and stderr kept apart, without blocking this process's event loop (the
 * tests' SQS server runs in it). A run still going after killAfterMs is killed, so a command that would wait
 * forever fails its test instead of hanging the suite; `during` may act on the running child (send a signal).
 */
export function runMasq(
  args: string[],
  env: NodeJS.ProcessEnv,
  opts: { killAfterMs?: number; cwd?: string; during?: (child: ReturnType<typeof spawn>, out: { stdout: string; stderr: string }) => void } = {},
): Promise<MasqRun> {
  const child = spawn(process.execPath, [MASQ_BIN, ...args], { env, stdio: ["ignore", "pipe", "pipe"], ...(opts.cwd ? { cwd: opts.cwd } : {}) });
  const out = { stdout: "", stderr: "" };
  child.stdout.on("data", (c: Buffer) => (out.stdout += c.toString()));
  child.stderr.on("data", (c: Buffer) => (out.stderr += c.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), opts.killAfterMs ?? 90_000);
  opts.during?.(child, out);
  return new Promise((resolve) => {
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, ...out });
    });
  });
}

/** A loopback port with nothing listening on it: connections are refused at once. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export function stderrLines(r: MasqRun): string[] {
  return r.stderr.split("\n").filter((l) => l.trim() !== "");
}

/** What a person must never read: class names, stack frames, `undefined`. */
export const INTERNALS = /ConfigError|TransientError|FatalError|DataError|UnreachableError|InterruptedError|DatabaseError|\bError:|undefined|\n\s+at /;
