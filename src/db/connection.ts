import type pg from "pg";
import { parseIntoClientConfig } from "pg-connection-string";

/**
 * Postgres connection strings in the forms psql accepts (libpq's "Connection Strings"):
 *   postgres://user:pass@host:5432/db?sslmode=require     a URL (postgresql:// too)
 *   postgresql:///db?host=/var/run/postgresql              a URL naming a Unix socket directory
 *   host=/var/run/postgresql dbname=db user=masq           keyword = value pairs, values quoted with '…' when needed
 *   db                                                     a bare database name
 * URLs are parsed by pg's own pg-connection-string; the keyword form is turned into the equivalent URL first, so
 * both forms mean the same (sslmode, sslrootcert, …). What is left out (user, host, …) falls back to the PG*
 * variables and pg's defaults. Errors name the problem, never the string: it may hold a password.
 */
export function parseConnectionString(text: string): pg.ClientConfig {
  const trimmed = text.trim();
  let url: string;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(trimmed)?.[1];
  if (scheme !== undefined && !/^postgres(ql)?$/i.test(scheme)) throw new Error(`must be a postgres:// or postgresql:// URL (got ${scheme.slice(0, 20)}://)`);
  if (scheme !== undefined) url = trimmed;
  else if (trimmed.includes("=")) url = keywordsToUrl(parseKeywords(trimmed));
  // Only a plain name: a mistyped URL taken as a name would come back, password and all, in "database … does not exist".
  else if (/^[\w$.-]+$/.test(trimmed)) url = `postgresql:///${encodeURIComponent(trimmed)}`;
  else throw new Error("is neither a postgres:// URL, nor keyword=value pairs, nor a database name");
  if (/^postgres(ql)?:\/\/[^/?]*,/i.test(url)) throw new Error("names several hosts; masq connects to one (no failover list)");
  let config: pg.ClientConfig;
  try {
    config = parseIntoClientConfig(url);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    // pg-connection-string reads sslrootcert, sslcert and sslkey while it parses.
    const reason = e.message?.startsWith("Invalid port")
      ? "has a port that is not a number"
      : e.syscall === "open" && typeof e.code === "string"
        ? `names a certificate or key file that cannot be read (${e.code}): check sslrootcert, sslcert and sslkey`
        : "is not a valid postgres:// URL";
    throw new Error(reason, { cause: err });
  }
  if (typeof config.host === "string" && /\s/.test(config.host)) throw new Error("has a host name with a space in it");
  // An empty part ("postgresql:///db" has no user) means "the default", as in libpq, not the empty name.
  for (const key of ["user", "password", "host", "database"] as const) {
    if (config[key] === "" || config[key] === null) delete config[key];
  }
  return config;
}

/** libpq keywords masq passes on; another keyword is refused, as psql refuses it. */
const KEYWORDS = new Set([
  "host",
  "hostaddr",
  "port",
  "dbname",
  "user",
  "password",
  "sslmode",
  "sslcert",
  "sslkey",
  "sslrootcert",
  "application_name",
  "fallback_application_name",
  "options",
  "client_encoding",
  "keepalives",
]);

/**
 * libpq's keyword = value syntax: spaces around "=" are allowed; a value is a run of non-space characters or a
 * single-quoted string; inside either, a backslash takes the next character literally.
 */
export function parseKeywords(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  const space = () => {
    while (i < text.length && /\s/.test(text[i]!)) i++;
  };
  for (space(); i < text.length; space()) {
    const start = i;
    while (i < text.length && text[i] !== "=" && !/\s/.test(text[i]!)) i++;
    const keyword = text.slice(start, i);
    space();
    if (text[i] !== "=") throw new Error(`has a word without "=" after it: ${safe(keyword)}`);
    if (!KEYWORDS.has(keyword)) throw new Error(`has an unknown keyword: ${safe(keyword)} (known: ${[...KEYWORDS].join(", ")})`);
    i++;
    space();
    let value = "";
    if (text[i] === "'") {
      for (i++; ; i++) {
        if (i >= text.length) throw new Error(`has an unterminated quoted value for ${keyword}`);
        if (text[i] === "'") break;
        if (text[i] === "\\") i++;
        value += text[i] ?? "";
      }
      i++;
    } else {
      for (; i < text.length && !/\s/.test(text[i]!); i++) {
        if (text[i] === "\\") i++;
        value += text[i] ?? "";
      }
    }
    out.set(keyword, value);
  }
  return out;
}

/** A keyword as typed when it reads like one (lowercase letters and "_"); anything else could be a misplaced password. */
function safe(keyword: string): string {
  return /^[a-z_]{1,30}$/.test(keyword) ? keyword : "(not shown)";
}

function keywordsToUrl(k: Map<string, string>): string {
  const params = new URLSearchParams();
  const host = k.get("host") || k.get("hostaddr");
  if (host?.includes(",")) throw new Error("names several hosts; masq connects to one (no failover list)");
  for (const [key, value] of k) {
    if (key === "dbname" || key === "hostaddr" || value === "") continue;
    params.set(key, key === "host" ? (host ?? value) : value);
  }
  if (host && !params.has("host")) params.set("host", host);
  const db = k.get("dbname") ?? "";
  const query = params.toString();
  return `postgresql:///${encodeURIComponent(db)}${query ? `?${query}` : ""}`;
}

/**
 * Which Postgres masq talks to, as a person can act on it: the setting that chose it and host:port/database.
 * Never the password. Used to name the server in errors and in "waiting" log lines.
 */
export interface PgTarget {
  /** --database-url, DATABASE_URL, or the PG* variables when no URL is given. */
  setting: string;
  /** host:port/database, as far as masq can tell before connecting. */
  where: string;
}

export function pgTarget(databaseUrl: string | undefined, setting?: string, env: NodeJS.ProcessEnv = process.env): PgTarget {
  if (databaseUrl === undefined) {
    const host = env.PGHOST || "localhost";
    const port = env.PGPORT || "5432";
    return { setting: setting ?? "PGHOST/PGPORT", where: `${host}:${port}/${env.PGDATABASE || env.PGUSER || "postgres"}` };
  }
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(databaseUrl.trim())) {
    // keyword=value pairs or a bare database name (connection-string.ts): what they name, where pg would go.
    try {
      const c = parseConnectionString(databaseUrl);
      const host = typeof c.host === "string" ? c.host : env.PGHOST || "localhost";
      return { setting: setting ?? "DATABASE_URL", where: `${host}:${c.port ?? (env.PGPORT || "5432")}/${c.database ?? env.PGDATABASE ?? "postgres"}` };
    } catch {
      return { setting: setting ?? "DATABASE_URL", where: "the server it names" };
    }
  }
  try {
    const u = new URL(databaseUrl);
    // A socket directory or several hosts can come in the query (?host=…); the URL's own host is the usual case.
    const host = u.searchParams.get("host") ?? (u.hostname || "localhost");
    const port = u.port || u.searchParams.get("port") || "5432";
    const db = decodeURIComponent(u.pathname.replace(/^\//, "")) || decodeURIComponent(u.username) || "postgres";
    return { setting: setting ?? "DATABASE_URL", where: `${host}:${port}/${db}` };
  } catch {
    return { setting: setting ?? "DATABASE_URL", where: "the server it names" };
  }
}

/** "DATABASE_URL at db.example.com:5432/app": the object part of an error line. */
export function targetText(t: PgTarget): string {
  return `${t.setting} at ${t.where}`;
}
