import { spawn } from "node:child_process";
import { MASQ_BIN } from "./masq-process.ts";

export interface MasqRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs bin/masq to its end with exactly this environment (plus PATH and HOME), optionally feeding stdin. */
export function runMasq(args: string[], env: Record<string, string | undefined>, stdin?: string): Promise<MasqRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MASQ_BIN, ...args], { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.stdin.end(stdin ?? "");
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}
