/**
 * masq's exit line "process usage" (src/commands/run.ts): getrusage of the whole process, and, from masq versions
 * that run worker threads, each JavaScript thread's own CPU time. Older binaries (e.g. via --masq-bin) log only the
 * totals; then `threads` is null and the report gives the total alone.
 */
export interface ThreadUsage {
  /** "main", "prepare-1", … as masq names them. */
  name: string;
  cpuUserUs: number;
  cpuSystemUs: number;
}

export interface ProcessUsage {
  cpuUserMs: number;
  cpuSystemMs: number;
  maxRssMb: number;
  threads: ThreadUsage[] | null;
}

/** One thread's CPU time per message (µs); "other" is the process total minus every named thread (libuv, GC helpers). */
export interface ThreadCpu {
  name: string;
  cpuUsPerMessage: number;
}

const finite = (v: unknown, what: string): number => {
  const n = Number(v);
  if (typeof v !== "number" || !Number.isFinite(n) || n < 0) throw new Error(`masq's "process usage" line has no valid ${what} (got ${JSON.stringify(v)})`);
  return n;
};

/** Reads the parsed JSON log line; throws on a line that is not the usage line masq writes. */
export function parseProcessUsage(line: Record<string, unknown>): ProcessUsage {
  const usage = { cpuUserMs: finite(line.cpuUserMs, "cpuUserMs"), cpuSystemMs: finite(line.cpuSystemMs, "cpuSystemMs"), maxRssMb: finite(line.maxRssMb, "maxRssMb") };
  if (line.threads === undefined) return { ...usage, threads: null };
  if (!Array.isArray(line.threads)) throw new Error(`masq's "process usage" line has a threads field that is not a list`);
  const threads = line.threads.map((t: unknown, i): ThreadUsage => {
    const o = (typeof t === "object" && t !== null ? t : {}) as Record<string, unknown>;
    if (typeof o.name !== "string" || o.name === "") throw new Error(`masq's "process usage" line: thread ${i} has no name`);
    return { name: o.name, cpuUserUs: finite(o.cpuUserUs, `cpuUserUs of thread ${o.name}`), cpuSystemUs: finite(o.cpuSystemUs, `cpuSystemUs of thread ${o.name}`) };
  });
  return { ...usage, threads };
}

/**
 * CPU µs per message of each named thread, then "other": the process's total (which getrusage counts over every
 * thread) minus the named threads, when that is positive. Null when masq did not report its threads.
 */
export function threadCpuPerMessage(u: ProcessUsage, messages: number): ThreadCpu[] | null {
  if (u.threads === null) return null;
  const per = u.threads.map((t) => ({ name: t.name, cpuUsPerMessage: (t.cpuUserUs + t.cpuSystemUs) / messages }));
  const namedUs = u.threads.reduce((a, t) => a + t.cpuUserUs + t.cpuSystemUs, 0);
  const otherUs = (u.cpuUserMs + u.cpuSystemMs) * 1000 - namedUs;
  // The totals are rounded to the millisecond: a remainder below that is rounding, not a thread.
  if (otherUs > 1000) per.push({ name: "other", cpuUsPerMessage: otherUs / messages });
  return per;
}
