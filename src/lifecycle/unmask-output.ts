import { ConfigError } from "../errors.ts";

/** One recovered value, as `masq unmask` prints it. */
export interface Unmasked {
  kind: string;
  pseudonym: string;
  value: string;
}

export type UnmaskFormat = "table" | "csv" | "json";

export function formatUnmasked(rows: readonly Unmasked[], format: UnmaskFormat): string {
  if (format === "json") return `${JSON.stringify(rows, null, 2)}\n`;
  if (format === "csv") return ["kind,pseudonym,value", ...rows.map((r) => [r.kind, r.pseudonym, r.value].map(csvField).join(","))].join("\r\n") + "\r\n";
  const header = { kind: "kind", pseudonym: "pseudonym", value: "value" };
  const all = [header, ...rows];
  const kindWidth = Math.max(...all.map((r) => r.kind.length));
  const pseudonymWidth = Math.max(...all.map((r) => r.pseudonym.length));
  return all.map((r) => `${r.kind.padEnd(kindWidth)}  ${r.pseudonym.padEnd(pseudonymWidth)}  ${printable(r.value)}`).join("\n") + "\n";
}

/**
 * RFC 4180: a field with a comma or quote is quoted, and its quotes doubled. Control characters (C0 and C1, CR and
 * LF included) are written escaped as \uXXXX, as in the table: a CSV printed to a terminal must not act on ESC or
 * BEL. A value that a spreadsheet would run as a formula (it starts with = + - @, tab or CR; a device id is
 * arbitrary text) gets a leading ' (OWASP's advice against CSV injection); --format json gives every value exactly.
 */
export function csvField(value: string): string {
  const safe = printable(/^[=+\-@\t\r]/.test(value) ? `'${value}` : value);
  return /[",]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

/** In the table, control characters (C0 and C1: a terminal would act on ESC and CSI) in a value (a device id is arbitrary text) are shown escaped, not interpreted. */
export function printable(value: string): string {
  // eslint-disable-next-line no-control-regex
  return value.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** --format of unmask and subject export. */
export function readFormat(flags: Record<string, unknown>): UnmaskFormat {
  const f = typeof flags.format === "string" ? flags.format : "table";
  if (f !== "table" && f !== "csv" && f !== "json") throw new ConfigError("--format", "must be table, csv or json", { what: "unknown format" });
  return f;
}
