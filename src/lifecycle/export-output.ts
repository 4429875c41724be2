import { csvField, printable, type UnmaskFormat } from "./unmask.ts";

/** One row of the user's table, its ip and device_id beside their pseudonyms (null: the vault holds no value). */
export interface ExportedRow {
  source: "row";
  user_id: string;
  create_date: string | null;
  device_type: string | null;
  locale: string | null;
  /** As the person sent it, in MAJOR.MINOR.PATCH form ("2.3" is "2.3.0"): the document is for them, not the table's integer. */
  app_version: string | null;
  masked_ip: string | null;
  ip: string | null;
  masked_device_id: string | null;
  device_id: string | null;
}

/** A row as the table would have held it, with its values: what a db_rejected record keeps instead of an original. */
export type ExportedMaskedRow = Omit<ExportedRow, "source" | "user_id">;

/**
 * One of the user's quarantined messages, its original decrypted (null: no original was kept). A db_rejected
 * record keeps none: its `masked_row` is the row the table refused, its ip and device_id from the vault (null for
 * every other record).
 */
export interface ExportedQuarantined {
  source: "quarantined";
  user_id: string;
  message_id: string;
  reason: string;
  received_at: string;
  replayed_at: string | null;
  original: string | null;
  masked_row: ExportedMaskedRow | null;
  /**
   * Only on a db_rejected record of a contract's event (one that holds pseudonyms of its kinds): the row the table
   * refused as stored, and the originals of its pseudonyms that the vault holds (masked_row is then null).
   */
  row?: Record<string, unknown> | null;
  values?: { kind: string; pseudonym: string; value: string | null }[];
}

/**
 * One row of a table a contract registered with a layout other than the login's: its columns as the table holds them
 * (pseudonyms and hashes included), and beside each recoverable (pseudonymized) column its original (null: the vault
 * holds no value). A hash column has no original.
 */
export interface ExportedContractRow {
  source: "contract_row";
  table: string;
  user_id: string;
  create_date: string | null;
  columns: Record<string, unknown>;
  values: Record<string, string | null>;
}

export type ExportLine = ExportedRow | ExportedContractRow | ExportedQuarantined;

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
 * `begin`, then `page` for each page of lines, then `end`. The same safety as `masq unmask` (unmask.ts, formatUnmasked): in
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

/** A db_rejected record's masked row goes in the row's columns, its original (none) left empty. */
function csvLine(l: ExportLine): string {
  // The CSV's columns are the login's: a contract table's row keeps its own (and its values) as JSON in `original`.
  if (l.source === "contract_row") {
    const cells = { ...empty(), source: l.source, user_id: l.user_id, create_date: l.create_date ?? "", original: JSON.stringify({ table: l.table, columns: l.columns, values: l.values }) };
    return CSV_COLUMNS.map((c) => csvField(cells[c])).join(",");
  }
  const rowCells = (r: ExportedMaskedRow) => ({ create_date: r.create_date ?? "", device_type: r.device_type ?? "", locale: r.locale ?? "", app_version: r.app_version ?? "", masked_ip: r.masked_ip ?? "", ip: r.ip ?? "", masked_device_id: r.masked_device_id ?? "", device_id: r.device_id ?? "" });
  const cells: Record<(typeof CSV_COLUMNS)[number], string> =
    l.source === "row"
      ? { ...empty(), source: "row", user_id: l.user_id, ...rowCells(l) }
      : { ...empty(), source: "quarantined", user_id: l.user_id, ...(l.masked_row === null ? {} : rowCells(l.masked_row)), message_id: l.message_id, quarantine_reason: l.reason, received_at: l.received_at, replayed_at: l.replayed_at ?? "", original: l.original ?? contractRejected(l) };
  return CSV_COLUMNS.map((c) => csvField(cells[c])).join(",");
}

/** A contract's db_rejected record (no original kept): its refused row and values as one JSON text; "" for any other. */
function contractRejected(l: ExportedQuarantined): string {
  return l.values === undefined ? "" : JSON.stringify({ row: l.row ?? null, values: l.values });
}

function empty(): Record<(typeof CSV_COLUMNS)[number], string> {
  return Object.fromEntries(CSV_COLUMNS.map((c) => [c, ""])) as Record<(typeof CSV_COLUMNS)[number], string>;
}

/** In the table a missing value shows as "-", a pseudonym whose value the vault does not hold as "(not in vault)". */
function tableLine(l: ExportLine): string {
  if (l.source === "contract_row") {
    const cells = Object.entries(l.columns).map(([k, v]) => {
      const original = Object.hasOwn(l.values, k) ? ` (${l.values[k] === null ? "not in vault" : printable(l.values[k]!)})` : "";
      return `${printable(k)}=${v === null ? "-" : printable(typeof v === "string" ? v : JSON.stringify(v))}${original}`;
    });
    return [`row`.padEnd(6), show(l.create_date).padEnd(11), printable(l.table), ...cells].join("  ");
  }
  if (l.source === "quarantined") {
    const replayed = l.replayed_at === null ? "" : ` (replayed ${l.replayed_at})`;
    const kept =
      l.masked_row !== null
        ? `no original kept; the row the table refused: ${rowCells(l.masked_row).join("  ")}`
        : l.values !== undefined
          ? `no original kept; the row the table refused, with its values: ${printable(contractRejected(l))}`
          : `original: ${l.original === null ? "(no original kept)" : printable(l.original)}`;
    return `quarantined  ${l.received_at}  ${printable(l.message_id)}  ${printable(l.reason)}${replayed}  ${kept}`;
  }
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

function show(v: string | number | null | undefined): string {
  return v === null || v === undefined ? "-" : printable(String(v));
}

function value(pseudonym: string | null, v: string | null): string {
  return pseudonym === null ? "-" : v === null ? "(not in vault)" : printable(v);
}

/** A masked row's cells, unpadded: on a quarantine line they follow the record's own fields. */
function rowCells(r: ExportedMaskedRow): string[] {
  return [show(r.create_date), show(r.device_type), show(r.locale), show(r.app_version), show(r.masked_ip), value(r.masked_ip, r.ip), show(r.masked_device_id), value(r.masked_device_id, r.device_id)];
}
