import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

/**
 * fauxqs as a server process of its own, with its state in SQLite under dataDir, so a test can kill it (SIGKILL,
 * like a crash) and start it again on the same port with its queues and messages intact.
 */
export interface FauxqsProcess {
  endpoint: string;
  kill(): Promise<void>;
  start(): Promise<void>;
}

// The package exports only its ESM library entry (dist/app.js); its server entry (the one that honours
// FAUXQS_DATA_DIR with FAUXQS_PERSISTENCE=true) sits beside it.
const server = path.join(path.dirname(fileURLToPath(import.meta.resolve("fauxqs"))), "server.js");

export async function startFauxqsProcess(port: number, dataDir: string): Promise<FauxqsProcess> {
  const endpoint = `http://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn(process.execPath, [server], {
      env: { ...process.env, FAUXQS_PORT: String(port), FAUXQS_DATA_DIR: dataDir, FAUXQS_PERSISTENCE: "true" },
      stdio: "ignore",
    });
    const until = Date.now() + 20_000;
    for (;;) {
      try {
        if ((await fetch(`${endpoint}/health`)).ok) return;
      } catch {
        // not up yet
      }
      if (Date.now() > until) throw new Error("fauxqs did not start");
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await start();
  return {
    endpoint,
    start,
    kill: () =>
      new Promise<void>((resolve) => {
        if (!child || child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGKILL");
      }),
  };
}
