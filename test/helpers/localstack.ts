import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../../src/ops/demo.ts";

/**
 * LocalStack from PyPI, without Docker: a real SQS (and KMS) as users meet it. Two versions, each in its own venv
 * built by scripts/localstack/install.sh under ~/.cache/masq-ci-localstack-<version>:
 *   2.3.2    Query protocol only, like the take-home image (LocalStack before 3.0);
 *   2026.3.0 JSON and Query, like a current LocalStack (Python 3.13).
 * Tests skip when the venv is missing and cannot be built for want of Python; with MASQ_TEST_REQUIRE_LOCALSTACK=1
 * (CI sets it) a missing LocalStack fails instead.
 */
export type LocalStackVersion = "2.3.2" | "2026.3.0";

export const INSTALL_SCRIPT = fileURLToPath(new URL("../../scripts/localstack/install.sh", import.meta.url));

function venvPython(version: LocalStackVersion): string {
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(cache, `masq-ci-localstack-${version}`, "bin", "python");
}

/** The check install.sh makes: the SQS and KMS providers import (the entry point alone imports even where it cannot run). */
function usable(python: string): boolean {
  const check = "import localstack.runtime.main, localstack.services.sqs.provider, localstack.services.kms.provider";
  return existsSync(python) && spawnSync(python, ["-c", check], { stdio: "ignore" }).status === 0;
}

/** The venv's Python, building the venv first if a suitable Python is there (minutes, once per machine). */
export function localStackPython(version: LocalStackVersion): string | null {
  const python = venvPython(version);
  if (usable(python)) return python;
  if (process.env.MASQ_TEST_SKIP_LOCALSTACK_INSTALL !== "1") {
    spawnSync("bash", [INSTALL_SCRIPT, version], { stdio: ["ignore", "ignore", "inherit"] });
    if (usable(python)) return python;
  }
  return null;
}

export function localStackSkipReason(version: LocalStackVersion): string | false {
  if (localStackPython(version) !== null) return false;
  const why = `LocalStack ${version} is not installed and could not be built (scripts/localstack/install.sh ${version}; needs Python ${version === "2.3.2" ? "3.11" : "3.13"})`;
  if (process.env.MASQ_TEST_REQUIRE_LOCALSTACK === "1") throw new Error(`MASQ_TEST_REQUIRE_LOCALSTACK=1 but ${why}`);
  return why;
}

export interface LocalStack {
  version: LocalStackVersion;
  port: number;
  /** http://localhost:<port>: what the take-home settings name, and what queue URLs come back with. */
  endpoint: string;
  /** The queue URL LocalStack gives a queue of this name, as the take-home README writes it. */
  queueUrl(name: string): string;
  /** Its output so far (for a failing test's message). */
  output: string[];
  stop(): Promise<void>;
}

/**
 * Starts LocalStack (SQS, KMS, STS) on a free 127.0.0.1 port in host mode, with the environment found to work
 * without Docker (docs/localstack.md), and waits until /_localstack/health answers. KMS keys live in its memory.
 */
export async function startLocalStack(version: LocalStackVersion): Promise<LocalStack> {
  const python = localStackPython(version);
  if (python === null) throw new Error(`LocalStack ${version} is not installed`);
  const port = await freePort();
  const root = mkdtempSync(join(tmpdir(), `masq-localstack-${version}-`));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    SERVICES: "sqs,kms,sts",
    GATEWAY_LISTEN: `127.0.0.1:${port}`,
    // The default server (twisted) ignores GATEWAY_LISTEN's host and binds 0.0.0.0.
    GATEWAY_SERVER: "hypercorn",
    OVERRIDE_IN_DOCKER: "0",
    FILESYSTEM_ROOT: root,
    // Otherwise it starts a DNS server and looks up localstack.cloud.
    DNS_ADDRESS: "0",
    DISABLE_EVENTS: "1",
    SKIP_SSL_CERT_DOWNLOAD: "1",
    // Queue URLs http://localhost:<port>/000000000000/<name>, as the take-home stack returns them.
    LOCALSTACK_HOST: `localhost:${port}`,
    SQS_ENDPOINT_STRATEGY: "off",
  };
  const child: ChildProcess = spawn(python, ["-m", "localstack.runtime.main"], { env, cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  const output: string[] = [];
  const collect = (chunk: Buffer) => {
    output.push(...chunk.toString().split("\n").filter(Boolean));
    if (output.length > 400) output.splice(0, output.length - 400);
  };
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const endpoint = `http://localhost:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(killer);
    }
    rmSync(root, { recursive: true, force: true });
  };
  const until = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`LocalStack ${version} exited at start:\n${output.slice(-30).join("\n")}`);
    }
    try {
      const res = await fetch(`http://127.0.0.1:${port}/_localstack/health`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > until) {
      await stop();
      throw new Error(`LocalStack ${version} did not answer /_localstack/health within 120 s:\n${output.slice(-30).join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return { version, port, endpoint, queueUrl: (name) => `${endpoint}/000000000000/${name}`, output, stop };
}
