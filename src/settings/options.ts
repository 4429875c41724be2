import { Option } from "commander";
import { SETTINGS, shownDefault, type Setting, type SettingKey } from "./spec.ts";

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
