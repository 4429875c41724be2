import { readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import type * as Yaml from "yaml";
import { ConfigError } from "../errors.ts";
import { nearestName } from "./nearest.ts";
import type { Found } from "./sources.ts";
import { attributeName, SETTINGS, type Setting } from "./spec.ts";

/**
 * A config file (--config, MASQ_CONFIG): a YAML map of settings by their environment variables' names, the layer
 * under the environment and over the defaults (sources.ts). The whole file is checked as it is loaded, so a mistake
 * in it exits 2 naming the file, line:col and key, whichever command reads it: YAML's own errors, a key that is no
 * setting, a value that is not one piece of text, a value its setting refuses. Every value stays text, parsed by its
 * setting exactly as the same text in the environment would be (YAML's failsafe schema: 0123 stays "0123").
 */
export interface ConfigFile {
  path: string;
  /** By the setting's variable name: the text, and where it was given (`MASQ_BATCH_SIZE in masq.yaml:3:17`). */
  values: ReadonlyMap<string, Found>;
}

/** The settings a config file may hold: every one but the file itself, by its primary variable name. */
const BY_NAME: ReadonlyMap<string, Setting<unknown>> = new Map(
  Object.values(SETTINGS)
    .filter((s: Setting<unknown>) => s.env !== SETTINGS.config.env)
    .map((s: Setting<unknown>) => [s.env, s]),
);

/**
 * The YAML reader, loaded only when a config file is named: requiring it took 36 to 74 ms (10 runs) of a start that
 * every drain would pay otherwise (measured 2026-12-07 on the 2-core dev machine; a drain's start is timed,
 * docs/benchmark.md).
 */
function yaml(): typeof Yaml {
  return createRequire(import.meta.url)("yaml") as typeof Yaml;
}

/** `from` names what gave the path (--config or MASQ_CONFIG), for errors about the file as a whole. */
export function loadConfigFile(path: string, from: string): ConfigFile {
  let text: string;
  let mode: number;
  try {
    text = readFileSync(path, "utf8");
    mode = statSync(path).mode;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    throw new ConfigError(from, `cannot read the config file ${path} (${code})`, { hint: code === "ENOENT" ? "check the path; a relative one is from the current directory" : undefined });
  }
  const { isMap, isNode, isScalar, LineCounter, parseDocument } = yaml();
  const lines = new LineCounter();
  // No "pretty" errors: they quote the line, and the line may hold a key.
  const doc = parseDocument(text, { schema: "failsafe", lineCounter: lines, prettyErrors: false });
  const at = (offset: number) => {
    const p = lines.linePos(offset);
    return `${path}:${p.line}:${p.col}`;
  };
  const bad = doc.errors[0];
  if (bad !== undefined) throw new ConfigError(at(bad.pos[0]), `is not valid YAML: ${bad.message}`, { what: "invalid config file" });
  const values = new Map<string, Found>();
  // An empty file (or only comments) sets nothing.
  if (doc.contents === null) return { path, values };
  if (!isMap(doc.contents)) throw new ConfigError(at(doc.contents.range?.[0] ?? 0), "must be a map of settings, one `NAME: value` a line (MASQ_BATCH_SIZE: 500)", { what: "invalid config file" });
  const readableByOthers = process.platform !== "win32" && (mode & 0o044) !== 0;
  for (const pair of doc.contents.items) {
    const key = pair.key;
    const where = at(isNode(key) && key.range ? key.range[0] : 0);
    // A key is echoed only if it looks like a name: "MASQ_MASTER_KEY 6f1c…" as a key holds a value.
    if (!isScalar(key) || typeof key.value !== "string" || !/^[A-Za-z][A-Za-z0-9_.-]{0,63}$/.test(key.value)) {
      throw new ConfigError(`a key in ${where}`, "is not a setting's name (not shown, as it may hold a value); write NAME: value", { what: "unknown setting in config file" });
    }
    const name = key.value;
    const s = BY_NAME.get(name);
    if (s === undefined) throw new ConfigError(`${name} in ${where}`, unknownKey(name), { what: "unknown setting in config file" });
    const value = pair.value;
    const valueAt = isNode(value) && value.range ? at(value.range[0]) : where;
    const from = `${name} in ${valueAt}`;
    // Values are never echoed here: the setting may be a secret.
    if (!isScalar(value)) throw new ConfigError(from, "must be one value (a word, number or true/false), not a list, map or alias", { what: "invalid config file" });
    const text = String(value.value);
    if (text.trim() === "") throw new ConfigError(from, "has no value; give one, or remove the line to leave the setting unset");
    s.parse(text, from);
    if (readableByOthers && isSecret(s, text)) {
      throw new ConfigError(from, `is a secret, and other users may read ${path} (mode ${(mode & 0o777).toString(8).padStart(4, "0")})`, {
        what: "secret in a config file others can read",
        hint: `chmod 600 ${path}, or give ${name} in the environment instead`,
      });
    }
    values.set(name, { text, from });
  }
  return { path, values };
}

function isSecret(s: Setting<unknown>, text: string): boolean {
  return typeof s.secret === "function" ? s.secret(text) : s.secret === true;
}

/** What to write instead: keys are variables' names; a flag's name or a near miss gets the one meant. */
function unknownKey(name: string): string {
  if (name === SETTINGS.config.env) return "is not a setting a config file may hold: one file names no other";
  const byFlag = [...BY_NAME.values()].find((s) => s.flag !== undefined && (s.flag.split(" ")[0] === `--${name}` || attributeName(s.flag) === name));
  if (byFlag !== undefined) return `is not a setting's name: keys are the environment variables' names; write ${byFlag.env}`;
  const byFallback = [...BY_NAME.values()].find((s) => s.fallbackEnv?.includes(name));
  if (byFallback !== undefined) return `is read from the environment only; write ${byFallback.env}`;
  const upper = name.toUpperCase().replaceAll("-", "_");
  const nearest = [...BY_NAME.keys()].find((known) => known === upper || known === `MASQ_${upper}`) ?? nearestName(name, BY_NAME.keys());
  return nearest === undefined ? "is not a setting; docs/configuration.md lists them all" : `is not a setting; did you mean ${nearest}?`;
}
