import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { ConfigError } from "../errors.ts";

/**
 * The parsers settings are declared with (spec.ts). Each takes the text as given and the name it came from
 * (`--batch-size` or `MASQ_BATCH_SIZE`), and returns the value or throws a ConfigError naming that setting.
 * A parser never guesses, and never echoes a value that may be secret.
 */
export type Parser<T> = ((text: string, from: string) => T) & { range?: readonly [number, number] };

/** A whole number within bounds; `problem` words the refusal when the default wording would mislead. */
export function integer(min: number, max: number, problem?: (text: string) => string): Parser<number> {
  const parse = (text: string, from: string): number => {
    const n = Number(text);
    if (!/^-?\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new ConfigError(from, problem?.(text) ?? `must be a whole number from ${min} to ${max} (got "${text}")`);
    }
    return n;
  };
  return Object.assign(parse, { range: [min, max] as const });
}

/** One of a few words, in any case. */
export function oneOf<T extends string>(allowed: readonly T[]): Parser<T> {
  return (text, from) => {
    const v = text.trim().toLowerCase() as T;
    if (!allowed.includes(v)) throw new ConfigError(from, `must be one of ${allowed.join(", ")} (got "${text}")`);
    return v;
  };
}

/** A yes/no setting: true/false, yes/no, on/off, 1/0 in any case; anything else is an error, never a guess. */
export const boolean: Parser<boolean> = (text, from) => {
  const v = text.trim().toLowerCase();
  if (["true", "yes", "on", "1"].includes(v)) return true;
  if (["false", "no", "off", "0"].includes(v)) return false;
  throw new ConfigError(from, `must be true or false (got "${text}")`);
};

/** An http(s) URL; `what` names it in the error ("SQS queue"). */
export function httpUrl(what: string): Parser<string> {
  const schemes = ["http", "https"];
  return (text, from) => {
    let protocol: string;
    try {
      protocol = new URL(text).protocol.replace(/:$/, "");
    } catch {
      // A URL can hold a password: name the setting, never echo the value.
      throw new ConfigError(from, `is not a valid ${what} URL`);
    }
    if (!schemes.includes(protocol)) throw new ConfigError(from, `must be a ${schemes.map((s) => `${s}://`).join(" or ")} URL (got ${protocol}://)`);
    return text;
  };
}

/** Any text, trimmed. */
export const trimmed: Parser<string> = (value) => value.trim();

/** AWS_REGION: the SDK puts it in host names and signatures, and would refuse anything else at every call. */
export const region: Parser<string> = (value, from) => {
  if (!/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i.test(value)) {
    throw new ConfigError(from, `is not an AWS region name (for example us-east-1 or eu-west-2; got "${value}")`);
  }
  return value;
};

/** An IP address, or a DNS name (RFC 1123 labels) that is not a malformed dotted quad like 999.1.1.1. */
export const hostName: Parser<string> = (value, from) => {
  const host = value.trim();
  const ok =
    isIP(host) !== 0 ||
    (!/^[\d.]+$/.test(host) && host.length <= 253 && host.split(".").every((label) => /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i.test(label)));
  if (!ok) throw new ConfigError(from, "must be an IP address or a host name to bind, e.g. 0.0.0.0, 127.0.0.1 or ::");
  return host;
};

/** A port, 0 for any free one, or "off" (also false, no, none). */
export function portOrOff(): Parser<number | "off"> {
  const port = integer(0, 65_535);
  return Object.assign((value: string, from: string) => (/^(off|false|no|none)$/i.test(value.trim()) ? ("off" as const) : port(value, from)), { range: port.range });
}

/** The contents of a file that holds a secret (a key): read errors name the setting, never the contents. */
export function secretFile<T>(parse: (contents: string, from: string) => T): Parser<T> {
  return (file, from) => {
    let contents: string;
    try {
      contents = readFileSync(file, "utf8");
    } catch (err) {
      throw new ConfigError(from, `cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`);
    }
    return parse(contents, from);
  };
}

/** A parser from elsewhere (table names, connection strings) whose plain errors word a problem with the value. */
export function wording<T>(parse: (text: string) => T): Parser<T> {
  return (text, from) => {
    try {
      return parse(text);
    } catch (err) {
      // The message names the problem only: the text can hold a password.
      throw new ConfigError(from, (err as Error).message);
    }
  };
}
