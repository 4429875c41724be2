import { parseConnectionString } from "./connection-string.ts";

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
