import { readdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/**
 * CPU use over a phase, from /proc (Linux; elsewhere every figure is null): the whole machine's busy share, and
 * the CPU time of the SQS server process. On a 2-core machine these say whether a phase was CPU-bound, and by whom.
 */
export interface CpuReading {
  /** Busy share of all cores over the phase, 0–1. */
  machineBusy: number | null;
  /** CPU seconds the SQS server used over the phase. */
  sqsServerCpuSeconds: number | null;
  /**
   * Busy share of all cores spent outside this benchmark's process tree (its children: the SQS server, masq, the
   * embedded Postgres and their children): other work on the machine that competed with the measurement.
   */
  otherBusy: number | null;
  /** CPU seconds the embedded Postgres used over the phase (null with an external one). */
  postgresCpuSeconds: number | null;
}

const TICKS_PER_SECOND = 100;

function machineTicks(): { busy: number; total: number } | null {
  try {
    const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0);
    const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return null;
  }
}

/** Fields of /proc/<pid>/stat after the command name (which may hold spaces): [1] is ppid, [11..14] CPU times. */
function statFields(pid: number | string): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

function processTicks(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  const f = statFields(pid);
  return f === null ? null : Number(f[11]) + Number(f[12]);
}

/**
 * CPU ticks of this process and all its descendants, including children that have exited: a reaped child's time
 * is added to its parent's cutime/cstime, so each tick is counted once as long as the parent lives. Also the part
 * of it spent by Postgres processes (the embedded server is a descendant; an external one is not counted).
 */
function treeTicks(root: number): { all: number; postgres: number } | null {
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((d) => /^\d+$/.test(d));
  } catch {
    return null;
  }
  const info = new Map<number, { ppid: number; ticks: number; postgres: boolean }>();
  for (const pid of pids) {
    const f = statFields(pid);
    if (f === null) continue;
    let comm = "";
    try {
      comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    } catch {
      // gone meanwhile
    }
    info.set(Number(pid), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]), postgres: comm === "postgres" });
  }
  let all = 0;
  let postgres = 0;
  for (const [pid, p] of info) {
    for (let cur: number | undefined = pid; cur !== undefined && cur > 1; cur = info.get(cur)?.ppid) {
      if (cur === root) {
        all += p.ticks;
        if (p.postgres) postgres += p.ticks;
        break;
      }
    }
  }
  return { all, postgres };
}

/** Starts a reading; the returned function ends it. */
export function startCpuMeter(sqsServerPid: number | undefined): () => CpuReading {
  const m0 = machineTicks();
  const p0 = processTicks(sqsServerPid);
  const t0 = treeTicks(process.pid);
  return () => {
    const m1 = machineTicks();
    const p1 = processTicks(sqsServerPid);
    const t1 = treeTicks(process.pid);
    const span = m0 && m1 && m1.total > m0.total ? m1.total - m0.total : null;
    return {
      machineBusy: span !== null ? (m1!.busy - m0!.busy) / span : null,
      sqsServerCpuSeconds: p0 !== null && p1 !== null ? (p1 - p0) / TICKS_PER_SECOND : null,
      otherBusy: span !== null && t0 !== null && t1 !== null ? Math.max(0, (m1!.busy - m0!.busy - (t1.all - t0.all)) / span) : null,
      postgresCpuSeconds: t0 !== null && t1 !== null && t1.postgres > 0 ? (t1.postgres - t0.postgres) / TICKS_PER_SECOND : null,
    };
  };
}

export const CORES = availableParallelism();

/**
 * Waits (up to maxWaitMs) until the machine is nearly idle before a phase starts, so that a build or a test run
 * elsewhere on the machine does not land in a measurement. Returns the busy share last seen (null off Linux).
 */
export async function waitForQuiet(opts: { threshold?: number; maxWaitMs?: number } = {}): Promise<number | null> {
  const threshold = opts.threshold ?? 0.15;
  const until = Date.now() + (opts.maxWaitMs ?? 120_000);
  for (;;) {
    const a = machineTicks();
    await new Promise((r) => setTimeout(r, 1000));
    const b = machineTicks();
    if (a === null || b === null || b.total === a.total) return null;
    const busy = (b.busy - a.busy) / (b.total - a.total);
    if (busy <= threshold || Date.now() > until) return busy;
  }
}
