import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import pg from "pg";

export const LOGIN_ROLES_SQL = new URL("../../deploy/sql/login-roles.sql", import.meta.url);

export interface LoginRoles {
  /** Connection URLs of real login roles, each with its own random password (an embedded Postgres asks for one). */
  url: { service: string; person: string; replayer: string; analyst: string; nobody: string };
  names: { service: string; person: string; replayer: string; analyst: string; nobody: string };
  drop(): Promise<void>;
}

/**
 * Runs the shipped deploy/sql/login-roles.sql as the owner, with its psql variables set the way psql sets them
 * (:"x" a quoted identifier, :'x' a quoted literal, :x as is), to make a service login and a person login; then a
 * person who also holds masq_ingest (to replay), an analyst (masq_analyst) and a login with no masq role, as the
 * file's comments describe.
 */
export async function createLoginRoles(owner: pg.Pool, databaseUrl: string): Promise<LoginRoles> {
  const tag = randomBytes(4).toString("hex");
  const names = { service: `t_service_${tag}`, person: `t_person_${tag}`, replayer: `t_replayer_${tag}`, analyst: `t_analyst_${tag}`, nobody: `t_nobody_${tag}` };
  const passwords = { service: hex(), person: hex(), replayer: hex(), analyst: hex(), nobody: hex() };
  const vars: Record<string, string> = {
    service_role: names.service,
    service_password: passwords.service,
    person_role: names.person,
    person_password: passwords.person,
    table: "public.user_logins",
  };
  const sql = readFileSync(LOGIN_ROLES_SQL, "utf8")
    .split("\n")
    .filter((l) => !l.startsWith("--") && !l.startsWith("\\"))
    .join("\n")
    .replace(/:"(\w+)"/g, (_, v: string) => `"${vars[v]!.replace(/"/g, '""')}"`)
    .replace(/:'(\w+)'/g, (_, v: string) => `'${vars[v]!.replace(/'/g, "''")}'`)
    .replace(/:(\w+)/g, (m, v: string) => vars[v] ?? m);
  await owner.query(sql);
  await owner.query(`CREATE ROLE ${names.replayer} LOGIN PASSWORD '${passwords.replayer}'`);
  await owner.query(`GRANT masq_unmask, masq_ingest TO ${names.replayer}`);
  await owner.query(`CREATE ROLE ${names.analyst} LOGIN PASSWORD '${passwords.analyst}'`);
  await owner.query(`GRANT masq_analyst TO ${names.analyst}`);
  await owner.query(`CREATE ROLE ${names.nobody} LOGIN PASSWORD '${passwords.nobody}'`);
  const as = (role: keyof typeof names) => {
    const u = new URL(databaseUrl);
    u.username = names[role];
    u.password = passwords[role];
    return u.toString();
  };
  return {
    names,
    url: { service: as("service"), person: as("person"), replayer: as("replayer"), analyst: as("analyst"), nobody: as("nobody") },
    async drop() {
      for (const r of Object.values(names)) {
        await owner.query(`DROP OWNED BY ${r}`).catch(() => undefined);
        await owner.query(`DROP ROLE IF EXISTS ${r}`).catch(() => undefined);
      }
    },
  };
}

function hex(): string {
  return randomBytes(18).toString("hex");
}
