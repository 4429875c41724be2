import type { TopSnapshot } from "./top-snapshot.ts";

const n = (v: number) => Math.round(v).toLocaleString("en-US");
const rate = (v: number | undefined) => (v === undefined ? "-" : v.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 }));
const seconds = (v: number) => (v < 1 ? `${Math.round(v * 1000)} ms` : `${v.toLocaleString("en-US", { maximumFractionDigits: 1 })} s`);

/**
 * `masq top`'s screen: plain lines that fit 80 columns, readable without colour. `problem` (the endpoint cannot be
 * reached) goes on top, above the last snapshot seen, if any.
 */
export function formatTop(s: TopSnapshot | undefined, opts: { url: string; time: Date; problem?: string | undefined }): string[] {
  const lines = [`masq top  ${opts.url}  ${opts.time.toISOString().slice(11, 19)} UTC  (q to quit)`, ""];
  if (opts.problem !== undefined) lines.push(opts.problem, "");
  if (s === undefined) return [...lines, "waiting for the first scrape"];
  const r = s.rates ?? undefined;
  lines.push(
    `messages        total      per second`,
    `  received      ${n(s.messages.received).padStart(12)}  ${rate(r?.received).padStart(10)}`,
    `  written       ${n(s.messages.written).padStart(12)}  ${rate(r?.written).padStart(10)}`,
    `  quarantined   ${n(s.messages.quarantined).padStart(12)}  ${rate(r?.quarantined).padStart(10)}`,
    `  deleted       ${n(s.messages.deleted).padStart(12)}  ${rate(r?.deleted).padStart(10)}`,
    `  duplicates    ${n(s.messages.duplicates).padStart(12)}`,
    "",
    `quarantined by reason: ${listed(s.quarantinedByReason)}`,
    "",
    `in flight     ${n(s.inFlight)}` + (s.queue ? `    queue (polled every 15 s): ${n(s.queue.visible)} visible, ${n(s.queue.inFlight)} in flight, ${n(s.queue.delayed)} delayed` : "    queue: not polled yet"),
    `lag           ${s.lagSeconds ? `p50 ${seconds(s.lagSeconds.p50)}, p99 ${seconds(s.lagSeconds.p99)} (since start)` : "-"}` +
      `    last commit ${s.lastCommitSecondsAgo === null ? "never" : `${seconds(s.lastCommitSecondsAgo)} ago`}`,
    `batches       ${n(s.batches.count)}, mean size ${s.batches.meanSize === null ? "-" : n(s.batches.meanSize)}` +
      `${s.batches.lastIntervalMeanSize === null ? "" : ` (last second ${n(s.batches.lastIntervalMeanSize)})`}` +
      `, commit mean ${s.batches.meanCommitSeconds === null ? "-" : seconds(s.batches.meanCommitSeconds)}`,
    `retries       ${listed(s.retries)}`,
    `keys          pseudonym key ${s.keys.pseudonymKeyVersion === null ? "-" : `v${s.keys.pseudonymKeyVersion}`}, master key ${s.keys.masterKey ?? "-"}, ${n(s.keys.dataKeysGenerated)} data key(s) made`,
    `process       ${s.process.residentMemoryBytes === null ? "-" : `${n(s.process.residentMemoryBytes / 1_048_576)} MB resident`}, ${s.process.cpuSeconds === null ? "-" : `${seconds(s.process.cpuSeconds)} CPU`}`,
  );
  return lines;
}

function listed(counts: Record<string, number>): string {
  const entries = Object.entries(counts).sort(([a], [b]) => a.localeCompare(b));
  return entries.length === 0 ? "none" : entries.map(([k, v]) => `${k} ${n(v)}`).join(", ");
}
