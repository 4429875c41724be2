import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import path from "node:path";

/**
 * A memory limit for the masq process, as a container runtime sets one (deploy/kubernetes gives masq 512Mi): a
 * cgroup of its own with that limit. It matters for more than enforcement: Node sizes V8's heap from the memory it
 * may use, so on a large host masq's heap (and RSS) grows far beyond what it needs, while under a container limit it
 * stays small. Linux only, and it needs permission to create cgroups (root); the error says so otherwise.
 */
export interface MemoryLimit {
  megabytes: number;
  /** The command line, wrapped so that the process joins the cgroup before it execs. */
  wrap(argv: string[]): string[];
  close(): void;
}

export function createMemoryLimit(megabytes: number): MemoryLimit {
  const bytes = String(megabytes * 1024 * 1024);
  const name = `masq-bench-${process.pid}`;
  let dir: string;
  // cgroup v1 with its memory controller mounted, else the unified (v2) hierarchy with memory enabled.
  if (existsSync("/sys/fs/cgroup/memory/memory.limit_in_bytes")) {
    dir = path.join("/sys/fs/cgroup/memory", name);
    mkdir(dir);
    writeFileSync(path.join(dir, "memory.limit_in_bytes"), bytes);
  } else if (existsSync("/sys/fs/cgroup/cgroup.controllers") && readFileSync("/sys/fs/cgroup/cgroup.controllers", "utf8").split(/\s+/).includes("memory")) {
    dir = path.join("/sys/fs/cgroup", name);
    mkdir(dir);
    writeFileSync(path.join(dir, "memory.max"), bytes);
  } else {
    throw new Error("--memory-limit needs a cgroup memory controller (Linux, cgroup v1 memory or v2 with memory enabled)");
  }
  const procs = path.join(dir, "cgroup.procs");
  return {
    megabytes,
    wrap: (argv) => ["/bin/sh", "-c", `echo $$ > '${procs}' && exec "$0" "$@"`, ...argv],
    close: () => {
      try {
        rmdirSync(dir);
      } catch {
        // still in use or already gone; the kernel frees an empty cgroup's memory anyway
      }
    },
  };
}

function mkdir(dir: string): void {
  try {
    mkdirSync(dir);
  } catch (err) {
    throw new Error(`--memory-limit: cannot create the cgroup ${dir} (${(err as NodeJS.ErrnoException).code ?? "error"}); it needs root`, { cause: err });
  }
}
