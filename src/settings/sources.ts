import { envNames, type Setting } from "./spec.ts";

/**
 * Where a setting's value comes from, first found wins: the flags commander parsed, then the environment, then the
 * setting's default. This is the one place that order is written: another source (a `--config` file, between the
 * environment and the defaults) is one more entry in LAYERS, and every reader gets it.
 */
export interface Sources {
  /** What the user gave on the command line, by commander's attribute name (batchSize for --batch-size). */
  flags: Record<string, unknown>;
  env: NodeJS.ProcessEnv;
}

/** A setting's text as given, and where it was given: the flag or variable an error names. */
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

const LAYERS: readonly Layer[] = [fromFlags, fromEnv];

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

/** commander's key for a flag: "--batch-size <n>" → batchSize, "--no-migrate" → migrate. */
export function attributeName(flag: string): string {
  return flag
    .split(" ")[0]!
    .replace(/^--(no-)?/, "")
    .replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}
