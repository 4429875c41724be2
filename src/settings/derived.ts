import { Option } from "commander";
import { envNames, SETTINGS, type Setting, type SettingPart, shownDefault, type SettingKey } from "./spec.ts";

const ALL: readonly Setting<unknown>[] = Object.values(SETTINGS);

/**
 * Names masq knows without reading them as settings: the test harness and CI set them in the same shells
 * (test/helpers/moto.ts), or they are a test hook masq reads (a prepare or SQS thread exits, as a crashed one would;
 * docs/development.md). They get no "unknown setting" warning.
 */
const HARNESS = ["MASQ_MOTO_SERVER", "MASQ_TEST_PREPARE_THREAD_EXIT_AFTER", "MASQ_TEST_SQS_THREAD_EXIT_AFTER"];

/**
 * Every MASQ_* variable masq knows. An unknown one is almost always a typo (MASQ_RECIEVERS), which would otherwise
 * pass silently with the default: masq warns, naming the nearest known setting. test/unit/known-settings.test.ts
 * checks that every MASQ_* name in src/ is one of these.
 */
export const KNOWN_SETTINGS: readonly string[] = [...ALL.flatMap(envNames).filter((n) => n.startsWith("MASQ_")), ...HARNESS];

/** The variables of the settings of these parts, in the spec's order: what a command's --help names (cli.ts). */
export function settingsRead(parts: readonly SettingPart[]): string[] {
  return ALL.filter((s) => parts.includes(s.part)).flatMap(envNames);
}

/** Prefixes of variables that belong to masq's test harness, not to masq. */
const HARNESS_PREFIXES = ["MASQ_TEST_", "MASQ_LOCALSTACK_"];

/** One warning line per unknown MASQ_* variable, naming the nearest known setting when one is close. */
export function unknownSettingWarnings(env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith("MASQ_") || KNOWN_SETTINGS.includes(name) || HARNESS_PREFIXES.some((p) => name.startsWith(p))) continue;
    const nearest = nearestSetting(name);
    out.push(
      nearest === undefined
        ? `masq: warning: unknown setting ignored (${name}): no such setting; docs/configuration.md lists them all`
        : `masq: warning: unknown setting ignored (${name}): did you mean ${nearest}?`,
    );
  }
  return out;
}

export function nearestSetting(name: string): string | undefined {
  let best: { name: string; d: number } | undefined;
  for (const known of KNOWN_SETTINGS) {
    const d = editDistance(name, known);
    if (best === undefined || d < best.d) best = { name: known, d };
  }
  // Past about a third of the name, a "nearest" setting is a guess that misleads more than it helps.
  const limit = Math.max(3, Math.floor((name.length - "MASQ_".length) / 3));
  return best !== undefined && best.d <= limit ? best.name : undefined;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours (IE ↔ EI). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * A setting's flag for a command, as its declaration says: the flag, its help line, its variable and the default
 * --help shows. The default is for display only: config.ts applies it, so what commander passes on is only what the
 * user gave (cli.ts, explicit()). A command that uses the setting its own way says so in `override`.
 */
export function settingOption(key: SettingKey, override: { help?: string; defaultText?: string } = {}): Option {
  const s: Setting<unknown> = SETTINGS[key];
  if (s.flag === undefined) throw new Error(`${s.env} has no flag`);
  const option = new Option(s.flag, override.help ?? s.help ?? "");
  // A negated flag (--no-migrate) takes no value: commander would read any value of its variable as "off".
  if (option.negate) return option;
  option.env(s.env);
  const shown = override.defaultText ?? shownDefault(s);
  return shown === undefined ? option : option.default(undefined, shown.replaceAll("`", ""));
}

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
