import { envNames, SETTINGS, shownDefault, type Setting } from "./spec.ts";

/**
 * The settings table of docs/configuration.md, made from the spec: one row per setting, in the spec's order.
 * `node scripts/settings-doc.ts` writes it between the markers below; test/unit/docs-reference.test.ts fails when
 * the committed table is not this one.
 */
export const TABLE_START = "<!-- generated from src/settings/spec.ts by: node scripts/settings-doc.ts -->";
export const TABLE_END = "<!-- end of the generated settings table -->";

export function settingsTable(): string {
  const rows = Object.values(SETTINGS).map((s: Setting<unknown>) => {
    const flag = s.flag === undefined ? "—" : code(s.flag);
    const env = envNames(s).map(code).join(", ");
    const range = s.parse.range === undefined ? "" : ` A whole number from ${s.parse.range.map((n) => n.toLocaleString("en-US")).join(" to ")}.`;
    return `| ${[flag, env, shownDefault(s) ?? "—", s.doc + range].map((cell) => cell.replaceAll("|", "\\|")).join(" | ")} |`;
  });
  return ["| flag | environment | default | meaning |", "| --- | --- | --- | --- |", ...rows].join("\n");
}

/** `markdown` with the text between the markers replaced by the table made now. */
export function withSettingsTable(markdown: string): string {
  const start = markdown.indexOf(TABLE_START);
  const end = markdown.indexOf(TABLE_END);
  if (start < 0 || end < start) throw new Error(`the markers of the settings table are missing: ${TABLE_START} … ${TABLE_END}`);
  return `${markdown.slice(0, start + TABLE_START.length)}\n${settingsTable()}\n${markdown.slice(end)}`;
}

function code(text: string): string {
  return `\`${text}\``;
}
