import { DEFAULT_HTTP_PORT, readWatchedPort, settingSources, type Sources } from "../settings/config.ts";
import { ConfigError, describeError, UnreachableError } from "../errors.ts";
import { formatTop, parseMetrics, topSnapshot, type Sample, type TopSnapshot } from "../ops/top.ts";

const REFRESH_MS = 1000;

interface Endpoint {
  url: string;
  /** Where the URL came from, for the line that says it cannot be reached. */
  setting: string;
}

/**
 * `masq top`: a running masq at a glance, from its metrics endpoint. On a terminal a live view, redrawn every second
 * in the alternate screen until q, Ctrl-C or SIGTERM, which restore the terminal; an endpoint that cannot be reached
 * is said on top and retried. Elsewhere (or with --json) one JSON snapshot, with rates over one second.
 */
export async function topCommand(flags: Record<string, unknown>): Promise<number> {
  const endpoint = readEndpoint(flags, settingSources(flags, process.env));
  const live = flags.json !== true && process.stdout.isTTY === true && process.stdin.isTTY === true;
  return live ? liveView(endpoint) : printSnapshot(endpoint);
}

function readEndpoint(flags: Record<string, unknown>, src: Sources): Endpoint {
  if (typeof flags.url === "string") {
    if (!URL.canParse(flags.url) || !/^https?:$/.test(new URL(flags.url).protocol)) {
      throw new ConfigError("--url", `must be the http(s) URL of masq's metrics, e.g. http://127.0.0.1:${DEFAULT_HTTP_PORT}/metrics`);
    }
    return { url: flags.url, setting: "--url" };
  }
  const watched = readWatchedPort(src);
  if (watched !== undefined) return { url: `http://127.0.0.1:${watched.port}/metrics`, setting: watched.setting };
  return { url: `http://127.0.0.1:${DEFAULT_HTTP_PORT}/metrics`, setting: "--url or MASQ_HTTP_PORT" };
}

async function scrape(url: string): Promise<Sample[]> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return parseMetrics(await res.text());
}

function unreachable(e: Endpoint, err: unknown): UnreachableError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const reason = cause?.code ?? cause?.message ?? describeError(err);
  return new UnreachableError(`cannot reach the metrics endpoint ${e.url}`, {
    what: `cannot reach the metrics endpoint ${e.url}`,
    object: e.setting,
    hint: `${reason}; is masq run running there with its HTTP listener (MASQ_HTTP_PORT)?`,
  });
}

async function printSnapshot(e: Endpoint): Promise<number> {
  let first: Sample[];
  let second: Sample[];
  const started = Date.now();
  try {
    first = await scrape(e.url);
    await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
    second = await scrape(e.url);
  } catch (err) {
    throw unreachable(e, err);
  }
  const snapshot = topSnapshot(e.url, new Date(), second, { samples: first, intervalSeconds: (Date.now() - started) / 1000 });
  process.stdout.write(`${JSON.stringify(snapshot, null, 2)}\n`);
  return 0;
}

/** The live view. The terminal is restored on every way out: q, Ctrl-C (raw mode delivers it as a key), SIGTERM, a crash. */
async function liveView(e: Endpoint): Promise<number> {
  const out = process.stdout;
  const input = process.stdin;
  let previous: { samples: Sample[]; at: number } | undefined;
  let shown: TopSnapshot | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let resolveDone!: () => void;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  const finish = () => {
    stopped = true;
    resolveDone();
  };
  const onKey = (d: Buffer) => {
    const keys = d.toString("latin1");
    // q, or Ctrl-C and Ctrl-D, which raw mode delivers as keys rather than as a signal.
    if (["q", "Q", "\u0003", "\u0004"].some((k) => keys.includes(k))) finish();
  };
  const onSignal = () => finish();

  const draw = (problem?: string) => {
    const width = out.columns ?? 80;
    const lines = formatTop(shown, { url: e.url, time: new Date(), problem }).map((l) => l.slice(0, width));
    out.write(`\x1b[H${lines.map((l) => `${l}\x1b[K`).join("\n")}\x1b[J`);
  };
  const tick = async () => {
    try {
      const samples = await scrape(e.url);
      if (stopped) return;
      const at = Date.now();
      shown = topSnapshot(e.url, new Date(at), samples, previous && { samples: previous.samples, intervalSeconds: (at - previous.at) / 1000 });
      previous = { samples, at };
      draw();
    } catch (err) {
      if (stopped) return;
      const u = unreachable(e, err);
      draw(`masq: ${u.help.what} (${u.help.object}): ${u.help.hint} Retrying every second.`);
    }
    timer = setTimeout(() => void tick(), REFRESH_MS);
  };

  out.write("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");
  try {
    input.setRawMode(true);
    input.on("data", onKey);
    input.resume();
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    void tick();
    await done;
  } finally {
    clearTimeout(timer);
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    input.off("data", onKey);
    input.setRawMode(false);
    input.pause();
    out.write("\x1b[?25h\x1b[?1049l");
  }
  return 0;
}
