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

/** RFC 4180: a field with a comma, quote, CR or LF is quoted, and its quotes doubled. */
export function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

/** In the table, control characters in a value (a device id is arbitrary text) are shown escaped, not interpreted. */
function printable(value: string): string {
  // eslint-disable-next-line no-control-regex
  return value.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
