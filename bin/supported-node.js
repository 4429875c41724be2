// Plain JavaScript that any Node since 16 can parse: it must run on the old Node it replaces. masq's sources are
// TypeScript that Node runs directly from 22.18 (type stripping on by default); on an older Node, bin/masq and the
// npm scripts re-run themselves under Node 24 fetched through npm (`npx -p node@24`, as .ci/run does).
//
//   node bin/supported-node.js <node arguments…>   runs `node <node arguments…>` under a supported Node
//   import { relaunchIfUnsupported } from "./supported-node.js"   (bin/masq)
import { spawn } from "node:child_process";
import process from "node:process";
import { existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const MINIMUM = "22.18";
/** The Node fetched when this one is too old: the current LTS line, as in .nvmrc. */
export const FETCHED = "node@24";
const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
// The fetched Node's path, so that only the first run pays for npx (about 3 s even with a warm npm cache).
const CACHE = path.join(ROOT, "node_modules", ".cache", "masq", "supported-node");

/** Whether this Node version (e.g. "20.20.2") can run masq's TypeScript sources. */
export function isSupported(version) {
  const [major, minor] = version.split(".").map(Number);
  const [wantMajor, wantMinor] = MINIMUM.split(".").map(Number);
  return major > wantMajor || (major === wantMajor && minor >= wantMinor);
}

/**
 * On a supported Node: returns false and the caller goes on in this process. Otherwise runs the same command under
 * a fetched Node (one line on stderr says so) and exits with its exit code, or prints one line with the fix.
 */
export async function relaunchIfUnsupported(args = [...process.execArgv, ...process.argv.slice(1)]) {
  if (isSupported(process.versions.node)) return false;
  runUnder(await supportedNode(), args);
  return true;
}

async function supportedNode() {
  const have = `Node ${process.version} is older than ${MINIMUM}, which masq needs`;
  // A relaunched process that still finds an old Node: never loop. (Not a MASQ_* name: those are settings.)
  if (process.env.RELAUNCHED_BY_MASQ === "1") fail(`${have}, and the Node it was relaunched under is too; install Node ${MINIMUM}+ (nvm install reads .nvmrc)`);
  const cached = readCache();
  if (cached) {
    process.stderr.write(`masq: ${have}; running under ${cached.version} (${FETCHED} from the npm registry, cached)\n`);
    return cached.path;
  }
  // On a terminal, a line that says what the wait is for, replaced by the outcome; elsewhere only the outcome.
  const tty = process.stderr.isTTY === true;
  if (tty) process.stderr.write(`masq: ${have}; fetching ${FETCHED} from the npm registry…`);
  const r = await npx();
  if (tty) process.stderr.write("\r\x1b[K");
  const out = r.stdout.trim().split("\n").pop() ?? "";
  const [version, ...rest] = out.split(" ");
  const node = rest.join(" ");
  if (r.status !== 0 || !version || !isSupported(version.replace(/^v/, "")) || !existsSync(node)) {
    const code = /\b(E[A-Z0-9_]{3,})\b/.exec(`${r.error?.code ?? ""} ${r.stderr}`)?.[1];
    fail(
      `${have}, and ${FETCHED} could not be fetched from the npm registry${code ? ` (${code})` : ""}: ` +
        `install Node ${MINIMUM}+ (e.g. nvm install, which reads .nvmrc) and run again`,
    );
  }
  writeCache(version, node);
  process.stderr.write(`masq: ${have}; running under ${version} (${FETCHED} from the npm registry)\n`);
  return node;
}

/** Asks npx for Node 24's version and path. One retry, and short: offline, npm's default backoff waits over a minute. */
function npx() {
  const args = ["--prefer-offline", "--fetch-retries=1", "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=5000", "-y", "-p", FETCHED, "-c", 'node -p "process.version + \\" \\" + process.execPath"'];
  return new Promise((resolve) => {
    const child = spawn("npx", args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], timeout: 600_000 });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", (error) => resolve({ status: null, stdout, stderr, error }));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

function readCache() {
  try {
    const [version, node] = readFileSync(CACHE, "utf8").trim().split("\n");
    return version && node && isSupported(version.replace(/^v/, "")) && existsSync(node) ? { version, path: node } : undefined;
  } catch {
    return undefined;
  }
}

function writeCache(version, node) {
  try {
    mkdirSync(path.dirname(CACHE), { recursive: true });
    writeFileSync(CACHE, `${version}\n${node}\n`);
  } catch {
    // A read-only installation: every run asks npx again, which still works.
  }
}

function fail(line) {
  process.stderr.write(`masq: ${line}\n`);
  process.exit(1);
}

/**
 * Runs `node args` and exits as it does. Signals: a terminal's Ctrl-C already reaches the child (same process
 * group), so with a terminal on stdin SIGINT is not forwarded (masq would take it as the second, "exit at once",
 * signal); SIGTERM and SIGHUP, and SIGINT without a terminal, are meant for the command and are passed on.
 */
function runUnder(node, args) {
  const child = spawn(node, args, { stdio: "inherit", env: { ...process.env, RELAUNCHED_BY_MASQ: "1" } });
  const forwarded = process.stdin.isTTY ? ["SIGTERM", "SIGHUP"] : ["SIGTERM", "SIGHUP", "SIGINT"];
  for (const s of forwarded) process.on(s, () => child.kill(s));
  if (process.stdin.isTTY) process.on("SIGINT", () => undefined);
  child.on("error", (err) => fail(`cannot start ${node}: ${err.code ?? err.message}`));
  child.on("exit", (code, signal) => process.exit(code ?? 128 + (signal ? signalNumber(signal) : 1)));
}

function signalNumber(signal) {
  return { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 }[signal] ?? 1;
}

// As a script: node bin/supported-node.js --test … (the npm scripts).
if (process.argv[1] && pathToFileURL(realpathSync(process.argv[1])).href === import.meta.url) {
  if (process.argv.length < 3) fail("usage: node bin/supported-node.js <node arguments…>");
  if (!(await relaunchIfUnsupported(process.argv.slice(2)))) runUnder(process.execPath, process.argv.slice(2));
}
