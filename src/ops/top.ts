/**
 * `masq top`'s model and screen, free of I/O: the /metrics text of a running masq parsed into samples, two scrapes
 * turned into a snapshot with rates, and the snapshot drawn as plain lines.
 */

/** What `masq top` shows of a running masq: its metrics, with rates over the time between two scrapes. */
export interface TopSnapshot {
  url: string;
  at: string;
  messages: { received: number; written: number; quarantined: number; duplicates: number; deleted: number };
  quarantinedByReason: Record<string, number>;
  /** Per second over the last interval; null on the first scrape. */
  rates: { received: number; written: number; quarantined: number; deleted: number; intervalSeconds: number } | null;
  inFlight: number;
  queue: { visible: number; inFlight: number; delayed: number } | null;
  /** End-to-end lag since masq started, from the histogram's buckets (null before the first commit). */
  lagSeconds: { p50: number; p99: number } | null;
  batches: { count: number; meanSize: number | null; lastIntervalMeanSize: number | null; meanCommitSeconds: number | null };
  retries: Record<string, number>;
  keys: { pseudonymKeyVersion: number | null; masterKey: string | null; dataKeysGenerated: number };
  lastCommitSecondsAgo: number | null;
  process: { residentMemoryBytes: number | null; cpuSeconds: number | null };
}

/** A snapshot from the current scrape, and the previous one (taken intervalSeconds earlier) for rates. */
export function topSnapshot(url: string, now: Date, current: readonly Sample[], previous?: { samples: readonly Sample[]; intervalSeconds: number }): TopSnapshot {
  const m = metricsOf(current);
  const p = previous ? metricsOf(previous.samples) : undefined;
  const messages = m.messages();
  const batchCount = m.one("masq_batch_size_count") ?? 0;
  const batchSum = m.one("masq_batch_size_sum") ?? 0;
  const commits = m.one("masq_commit_duration_seconds_count") ?? 0;
  const lastCommit = m.one("masq_last_commit_timestamp_seconds");
  const visible = m.one("masq_queue_messages", { state: "visible" });
  let rates: TopSnapshot["rates"] = null;
  let lastIntervalMeanSize: number | null = null;
  if (p && previous && previous.intervalSeconds > 0) {
    const before = p.messages();
    const per = (k: "received" | "written" | "quarantined" | "deleted") => Math.max(0, messages[k] - before[k]) / previous.intervalSeconds;
    rates = { received: per("received"), written: per("written"), quarantined: per("quarantined"), deleted: per("deleted"), intervalSeconds: previous.intervalSeconds };
    const n = batchCount - (p.one("masq_batch_size_count") ?? 0);
    if (n > 0) lastIntervalMeanSize = (batchSum - (p.one("masq_batch_size_sum") ?? 0)) / n;
  }
  return {
    url,
    at: now.toISOString(),
    messages,
    quarantinedByReason: m.byLabel("masq_messages_quarantined_total", "reason"),
    rates,
    inFlight: m.one("masq_messages_in_flight") ?? 0,
    queue: visible === undefined ? null : { visible, inFlight: m.one("masq_queue_messages", { state: "in_flight" }) ?? 0, delayed: m.one("masq_queue_messages", { state: "delayed" }) ?? 0 },
    lagSeconds: m.quantiles("masq_end_to_end_lag_seconds"),
    batches: {
      count: batchCount,
      meanSize: batchCount > 0 ? batchSum / batchCount : null,
      lastIntervalMeanSize,
      meanCommitSeconds: commits > 0 ? (m.one("masq_commit_duration_seconds_sum") ?? 0) / commits : null,
    },
    retries: m.byLabel("masq_retries_total", "cause"),
    keys: {
      pseudonymKeyVersion: nonZero(m.one("masq_pseudonym_key_version")),
      masterKey: current.find((s) => s.name === "masq_master_key_info" && s.value === 1)?.labels.master_key ?? null,
      dataKeysGenerated: m.one("masq_data_keys_generated_total") ?? 0,
    },
    lastCommitSecondsAgo: lastCommit === undefined || lastCommit === 0 ? null : Math.max(0, now.getTime() / 1000 - lastCommit),
    process: { residentMemoryBytes: m.one("masq_process_resident_memory_bytes") ?? null, cpuSeconds: m.one("masq_process_cpu_seconds_total") ?? null },
  };
}

function nonZero(v: number | undefined): number | null {
  return v === undefined || v === 0 ? null : v;
}

function metricsOf(samples: readonly Sample[]) {
  const matches = (s: Sample, labels: Record<string, string>) => Object.entries(labels).every(([k, v]) => s.labels[k] === v);
  const one = (name: string, labels: Record<string, string> = {}): number | undefined => samples.find((s) => s.name === name && matches(s, labels))?.value;
  const byLabel = (name: string, label: string): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const s of samples) if (s.name === name && s.labels[label] !== undefined && s.value > 0) out[s.labels[label]] = (out[s.labels[label]] ?? 0) + s.value;
    return out;
  };
  const sum = (name: string) => samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);
  return {
    one,
    byLabel,
    messages: () => ({
      received: one("masq_messages_received_total") ?? 0,
      written: one("masq_rows_written_total") ?? 0,
      quarantined: sum("masq_messages_quarantined_total"),
      duplicates: one("masq_duplicates_skipped_total") ?? 0,
      deleted: one("masq_messages_deleted_total") ?? 0,
    }),
    quantiles: (name: string) => {
      const buckets = samples
        .filter((s) => s.name === `${name}_bucket`)
        .map((s) => ({ le: s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), count: s.value }))
        .sort((a, b) => a.le - b.le);
      const total = buckets.at(-1)?.count ?? 0;
      if (total === 0) return null;
      return { p50: quantile(buckets, total, 0.5), p99: quantile(buckets, total, 0.99) };
    },
  };
}

/** As Prometheus's histogram_quantile: linear within the bucket that holds the rank; the top finite bound past it. */
function quantile(buckets: readonly { le: number; count: number }[], total: number, q: number): number {
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lower;
      const inBucket = b.count - below;
      return inBucket === 0 ? b.le : lower + ((b.le - lower) * (rank - below)) / inBucket;
    }
    lower = b.le;
    below = b.count;
  }
  return lower;
}

/** One sample of the Prometheus text format: `name{label="value",…} 12.5`. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** The samples of a /metrics page (comments and blank lines skipped; a timestamp after the value ignored). */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = SAMPLE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(LABEL)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

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
