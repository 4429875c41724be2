import { csvField, printable, type UnmaskFormat } from "./unmask-output.ts";

/** One row of the user's table, its ip and device_id beside their pseudonyms (null: the vault holds no value). */
export interface ExportedRow {
  source: "row";
  user_id: string;
  create_date: string | null;
  device_type: string | null;
  locale: string | null;
  app_version: number | null;
  masked_ip: string | null;
  ip: string | null;
  masked_device_id: string | null;
  device_id: string | null;
}

/** One of the user's quarantined messages, its original decrypted (null: no original was kept). */
export interface ExportedQuarantined {
  source: "quarantined";
  user_id: string;
  message_id: string;
  reason: string;
  received_at: string;
  replayed_at: string | null;
  original: string | null;
}

export type ExportLine = ExportedRow | ExportedQuarantined;

const CSV_COLUMNS = [
  "source",
  "user_id",
  "create_date",
  "device_type",
  "locale",
  "app_version",
  "masked_ip",
  "ip",
  "masked_device_id",
  "device_id",
  "message_id",
  "quarantine_reason",
  "received_at",
  "replayed_at",
  "original",
] as const;

/**
 * `masq subject export`'s output, written page by page so that a user with a million rows is never held at once:
 * `begin`, then `page` for each page of lines, then `end`. The same safety as `masq unmask` (unmask-output.ts): in
 * the table and CSV every control character is shown escaped and a CSV field a spreadsheet would run is defused;
 * JSON is one array holding every value exactly.
 */
export class ExportWriter {
  private readonly format: UnmaskFormat;
  private lines = 0;

  constructor(format: UnmaskFormat) {
    this.format = format;
  }

  begin(): string {
    if (this.format === "json") return "[";
    if (this.format === "csv") return `${CSV_COLUMNS.join(",")}\r\n`;
    return `${["source", "create_date", "device_type", "locale", "app_version", "masked_ip".padEnd(64), "ip".padEnd(IP_WIDTH), "masked_device_id".padEnd(64), "device_id"].join("  ")}\n`;
  }

  page(lines: readonly ExportLine[]): string {
    let out = "";
    for (const l of lines) {
      if (this.format === "json") out += `${this.lines === 0 ? "\n" : ",\n"}  ${JSON.stringify(l)}`;
      else if (this.format === "csv") out += `${csvLine(l)}\r\n`;
      else out += `${tableLine(l)}\n`;
      this.lines++;
    }
    return out;
  }

  end(): string {
    return this.format === "json" ? (this.lines === 0 ? "]\n" : "\n]\n") : "";
  }
}

const IP_WIDTH = 39; // the longest RFC 5952 address

function csvLine(l: ExportLine): string {
  const cells: Record<(typeof CSV_COLUMNS)[number], string> =
    l.source === "row"
      ? { ...empty(), source: "row", user_id: l.user_id, create_date: l.create_date ?? "", device_type: l.device_type ?? "", locale: l.locale ?? "", app_version: l.app_version?.toString() ?? "", masked_ip: l.masked_ip ?? "", ip: l.ip ?? "", masked_device_id: l.masked_device_id ?? "", device_id: l.device_id ?? "" }
      : { ...empty(), source: "quarantined", user_id: l.user_id, message_id: l.message_id, quarantine_reason: l.reason, received_at: l.received_at, replayed_at: l.replayed_at ?? "", original: l.original ?? "" };
  return CSV_COLUMNS.map((c) => csvField(cells[c])).join(",");
}

function empty(): Record<(typeof CSV_COLUMNS)[number], string> {
  return Object.fromEntries(CSV_COLUMNS.map((c) => [c, ""])) as Record<(typeof CSV_COLUMNS)[number], string>;
}

/** In the table a missing value shows as "-", a pseudonym whose value the vault does not hold as "(not in vault)". */
function tableLine(l: ExportLine): string {
  const show = (v: string | number | null | undefined) => (v === null || v === undefined ? "-" : printable(String(v)));
  if (l.source === "quarantined") {
    const replayed = l.replayed_at === null ? "" : ` (replayed ${l.replayed_at})`;
    const original = l.original === null ? "(no original kept)" : printable(l.original);
    return `quarantined  ${l.received_at}  ${printable(l.message_id)}  ${printable(l.reason)}${replayed}  original: ${original}`;
  }
  const value = (pseudonym: string | null, v: string | null) => (pseudonym === null ? "-" : v === null ? "(not in vault)" : printable(v));
  return [
    "row".padEnd(6),
    show(l.create_date).padEnd(11),
    show(l.device_type).padEnd(11),
    show(l.locale).padEnd(6),
    show(l.app_version).padEnd(11),
    show(l.masked_ip).padEnd(64),
    value(l.masked_ip, l.ip).padEnd(IP_WIDTH),
    show(l.masked_device_id).padEnd(64),
    value(l.masked_device_id, l.device_id),
  ].join("  ");
}
