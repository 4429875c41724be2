import type { Snapshot } from "./estimate.ts";

const n = (v: number) => Math.round(v).toLocaleString("en-US");

/** "4s", "3m 05s", "1h 02m"; "--" while there is no rate to go by. */
export function formatEta(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return "--";
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * One line, never wider than the terminal (a wrapped line cannot be redrawn in place):
 *   draining [██████████░░░░░░░░░░] 52% | 26,000/50,000 messages | 4,210 msg/s | ETA 6s
 * The bar shrinks first; below a usable width, the text is cut.
 */
export function formatBar(label: string, s: Snapshot, unit: { total: string; rate: string }, columns: number): string {
  const fraction = s.total > 0 ? Math.min(1, s.done / s.total) : 0;
  const text = ` ${Math.floor(fraction * 100)}% | ${n(s.done)}/${n(s.total)} ${unit.total} | ${n(s.rate)} ${unit.rate} | ETA ${formatEta(s.etaSeconds)}`;
  const room = columns - 1 - label.length - 3 - text.length;
  const width = Math.min(30, room);
  if (width < 5) return `${label}${text}`.slice(0, Math.max(0, columns - 1));
  const filled = Math.round(fraction * width);
  return `${label} [${"█".repeat(filled)}${"░".repeat(width - filled)}]${text}`;
}
