import { spawn } from "node:child_process";
import { Socket } from "node:net";
import { fileURLToPath } from "node:url";

export interface LatencyProxy {
  endpoint: string;
  close(): Promise<void>;
}

const SERVER = fileURLToPath(new URL("./latency-proxy-server.ts", import.meta.url));

/** Starts latency-proxy-server.ts in its own process in front of 127.0.0.1:targetPort. */
export async function startLatencyProxy(targetPort: number, latencyMs: number): Promise<LatencyProxy> {
  const child = spawn(process.execPath, [SERVER], {
    env: { ...process.env, LATENCY_MS: String(latencyMs), TARGET_PORT: String(targetPort) },
    stdio: ["pipe", "pipe", "inherit"],
  });
  child.unref();
  if (child.stdin instanceof Socket) child.stdin.unref();
  const port = await new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`latency proxy exited with code ${code}`)));
    child.stdout.once("data", (chunk: Buffer) => resolve(Number(chunk.toString().trim())));
  });
  if (child.stdout instanceof Socket) child.stdout.unref();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGKILL");
      }),
  };
}
