import { spawn, type ChildProcess } from "node:child_process";
import { Socket } from "node:net";
import { fileURLToPath } from "node:url";

/**
 * fauxqs as a server process of its own, so that its CPU is not the caller's (the benchmark) and a test can kill it
 * (SIGKILL, like a crash) and start it again on the same port. With dataDir its state is in SQLite there and
 * survives the restart; without, it is in memory.
 */
export interface FauxqsProcess {
  endpoint: string;
  port: number;
  /** The server's process id while it runs. */
  pid(): number | undefined;
  kill(): Promise<void>;
  start(): Promise<void>;
}

// The compiled image runs dist/ops/fauxqs.js next to fauxqs-server.js; a checkout runs the .ts sources.
const SERVER = fileURLToPath(new URL(import.meta.url.endsWith(".js") ? "./fauxqs-server.js" : "./fauxqs-server.ts", import.meta.url));

/** nodeArgs: extra options for the server's Node (the benchmark preloads a module with --import). */
export async function startFauxqsProcess(port: number, dataDir?: string, nodeArgs: readonly string[] = []): Promise<FauxqsProcess> {
  const endpoint = `http://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn(process.execPath, [...nodeArgs, SERVER], {
      env: { ...process.env, FAUXQS_PORT: String(port), ...(dataDir ? { FAUXQS_DATA_DIR: dataDir } : {}) },
      stdio: ["pipe", "ignore", "inherit"],
    });
    // The server must not keep the caller alive, and it exits when the caller's end of its stdin closes.
    child.unref();
    if (child.stdin instanceof Socket) child.stdin.unref();
    const until = Date.now() + 20_000;
    for (;;) {
      try {
        if ((await fetch(`${endpoint}/health`)).ok) return;
      } catch {
        // not up yet
      }
      if (child.exitCode !== null) throw new Error(`fauxqs exited with code ${child.exitCode}`);
      if (Date.now() > until) throw new Error("fauxqs did not start");
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await start();
  return {
    endpoint,
    port,
    pid: () => (child?.exitCode === null ? child.pid : undefined),
    start,
    kill: () =>
      new Promise<void>((resolve) => {
        if (!child || child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGKILL");
      }),
  };
}
