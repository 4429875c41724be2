import type { ConfigFile } from "./config-file.ts";
import { attributeName, envNames, type Setting } from "./spec.ts";

/**
 * Where a setting's value comes from, first found wins: the flags commander parsed, then the environment, then a
 * config file (--config, MASQ_CONFIG: config-file.ts), then the setting's default. This is the one place that order
 * is written: each source is one entry in LAYERS, and every reader gets them all.
 */
export interface Sources {
  /** What the user gave on the command line, by commander's attribute name (batchSize for --batch-size). */
  flags: Record<string, unknown>;
  env: NodeJS.ProcessEnv;
  /** The config file, checked whole when it was loaded (config.ts, settingSources). */
  file?: ConfigFile | undefined;
}

/** A setting's text as given, and where it was given: the flag, the variable, or the key and line:col of a config file, for errors. */
export interface Found {
  text: string;
  from: string;
}

type Layer = (s: Setting<unknown>, src: Sources) => Found | undefined;

const fromFlags: Layer = (s, src) => {
  if (s.flag === undefined) return undefined;
  const v = src.flags[attributeName(s.flag)];
  // An empty flag counts as not given, like an empty variable; --no-migrate arrives as false.
  if (typeof v === "string" ? v === "" : typeof v !== "number" && typeof v !== "boolean") return undefined;
  return { text: String(v), from: s.flag.split(" ")[0]! };
};

const fromEnv: Layer = (s, src) => {
  for (const name of envNames(s)) {
    const v = src.env[name];
    if (v !== undefined && v !== "") return { text: v, from: name };
  }
  return undefined;
};

/** Only a setting's own name: a fallback variable (AWS_DEFAULT_REGION) is the environment's habit, not a key of the file. */
const fromFile: Layer = (s, src) => src.file?.values.get(s.env);

const LAYERS: readonly Layer[] = [fromFlags, fromEnv, fromFile];

/** The text that sets `s`, or undefined when nothing does. */
export function lookup(s: Setting<unknown>, src: Sources): Found | undefined {
  for (const layer of LAYERS) {
    const found = layer(s, src);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** The setting's value: parsed from what sets it (a ConfigError naming it if invalid), else its default. */
export function read<T>(s: Setting<T> & { default: T }, src: Sources): T;
export function read<T>(s: Setting<T>, src: Sources): T | undefined;
export function read<T>(s: Setting<T>, src: Sources): T | undefined {
  const found = lookup(s, src);
  if (found !== undefined) return s.parse(found.text, found.from);
  // A default that is an object (the table's name) is the spec's own: each reader gets its copy.
  return typeof s.default === "object" ? structuredClone(s.default) : s.default;
}
