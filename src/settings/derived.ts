import { Option } from "commander";
import { nearestName } from "./nearest.ts";
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
  return nearestName(name, KNOWN_SETTINGS);
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
 * The settings tables of the docs, made from the spec: one row per setting, in the spec's order.
 * `node scripts/settings-doc.ts` writes each between its markers; test/unit/docs-reference.test.ts fails when a
 * committed table is not the one made now.
 */
export interface GeneratedTable {
  /** The document, from the repository's root. */
  file: string;
  start: string;
  end: string;
  table: () => string;
}

/** docs/configuration.md: every setting, with its flag, variables, default and meaning. */
export const SETTINGS_TABLE: GeneratedTable = {
  file: "docs/configuration.md",
  start: "<!-- generated from src/settings/spec.ts by: node scripts/settings-doc.ts -->",
  end: "<!-- end of the generated settings table -->",
  table: settingsTable,
};

/** docs/deploy.md: the settings worth setting on the Lambda function, with what each means there. */
export const LAMBDA_TABLE: GeneratedTable = {
  file: "docs/deploy.md",
  start: "<!-- generated from src/settings/spec.ts (the settings with a lambda note) by: node scripts/settings-doc.ts -->",
  end: "<!-- end of the generated Lambda settings table -->",
  table: lambdaSettingsTable,
};

export const GENERATED_TABLES: readonly GeneratedTable[] = [SETTINGS_TABLE, LAMBDA_TABLE];

export function settingsTable(): string {
  const rows = ALL.map((s) => {
    const flag = s.flag === undefined ? "—" : code(s.flag);
    const env = envNames(s).map(code).join(", ");
    const range = s.parse.range === undefined ? "" : ` A whole number from ${s.parse.range.map((n) => n.toLocaleString("en-US")).join(" to ")}.`;
    return row([flag, env, shownDefault(s) ?? "—", s.doc + range]);
  });
  return ["| flag | environment | default | meaning |", "| --- | --- | --- | --- |", ...rows].join("\n");
}

export function lambdaSettingsTable(): string {
  const rows = ALL.filter((s) => s.lambda !== undefined).map((s) => row([code(s.env), shownDefault(s) ?? "—", s.lambda!]));
  return ["| variable | default | on Lambda |", "| --- | --- | --- |", ...rows].join("\n");
}

/** `markdown` with the text between the table's markers replaced by the table made now. */
export function withTable(markdown: string, t: GeneratedTable): string {
  const start = markdown.indexOf(t.start);
  const end = markdown.indexOf(t.end);
  if (start < 0 || end < start) throw new Error(`${t.file}: the markers of the generated table are missing: ${t.start} … ${t.end}`);
  return `${markdown.slice(0, start + t.start.length)}\n${t.table()}\n${markdown.slice(end)}`;
}

/** docs/configuration.md with its settings table made now. */
export function withSettingsTable(markdown: string): string {
  return withTable(markdown, SETTINGS_TABLE);
}

function row(cells: string[]): string {
  return `| ${cells.map((cell) => cell.replaceAll("|", "\\|")).join(" | ")} |`;
}

function code(text: string): string {
  return `\`${text}\``;
}
