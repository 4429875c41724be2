import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { freePort } from "../../src/ops/demo.ts";

/**
 * moto's server: a real AWS-compatible endpoint (SQS over both the JSON and the Query protocol; KMS for the vault).
 * Needs Python with `moto[server]`; .ci/run installs it. Tests skip without it unless MASQ_TEST_REQUIRE_MOTO=1,
 * which CI sets so a missing install fails loudly instead of skipping quietly.
 */
export function motoCommand(): string[] | null {
  const candidates = [process.env.MASQ_MOTO_SERVER, "moto_server"].filter((c): c is string => Boolean(c));
  for (const c of candidates) {
    if (spawnSync(c, ["--help"], { stdio: "ignore" }).status === 0) return [c];
  }
  return null;
}

export function motoSkipReason(): string | false {
  if (motoCommand() !== null) return false;
  if (process.env.MASQ_TEST_REQUIRE_MOTO === "1") throw new Error("MASQ_TEST_REQUIRE_MOTO=1 but moto_server is not installed (pip install 'moto[server]')");
  return "moto_server not installed (pip install 'moto[server]')";
}

export interface Moto {
  endpoint: string;
  stop(): Promise<void>;
}

/** `env` reaches moto's server: INITIAL_NO_AUTH_ACTION_COUNT=n, say, makes it enforce IAM after n requests. */
export async function startMoto(opts: { env?: Record<string, string> } = {}): Promise<Moto> {
  const cmd = motoCommand();
  if (cmd === null) throw new Error("moto_server not installed");
  const port = await freePort();
  const child: ChildProcess = spawn(cmd[0]!, ["-H", "127.0.0.1", "-p", String(port)], { stdio: "ignore", env: { ...process.env, ...opts.env } });
  const endpoint = `http://127.0.0.1:${port}`;
  const until = Date.now() + 30_000;
  for (;;) {
    try {
      const res = await fetch(`${endpoint}/moto-api/`);
      if (res.status < 500) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > until) {
      child.kill("SIGKILL");
      throw new Error("moto_server did not start within 30 s");
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    endpoint,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}
