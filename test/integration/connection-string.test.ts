import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { createDb } from "../../src/db/pool.ts";
import { spawnMasq } from "../helpers/masq-process.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres.ts";

/** Who and where a connection string took us: the server says, not the parser. */
async function whereConnected(databaseUrl: string): Promise<{ user: string; database: string; socket: boolean }> {
  const db = createDb({ databaseUrl, poolSize: 1 });
  try {
    const { rows } = await db.pool.query<{ user: string; database: string; socket: boolean }>(
      "SELECT current_user AS user, current_database() AS database, inet_server_addr() IS NULL AS socket",
    );
    return rows[0]!;
  } finally {
    await db.close();
  }
}

describe("connection strings in every form psql accepts reach the real Postgres", () => {
  let t: TestDatabase;
  let u: URL;
  before(async () => {
    t = await createTestDatabase();
    u = new URL(t.url);
  });
  after(() => t.close());
  const name = () => u.pathname.slice(1);

  test("a URL", async () => {
    assert.deepEqual(await whereConnected(t.url), { user: decodeURIComponent(u.username), database: name(), socket: false });
  });

  test("keyword = value pairs, with a quoted password", async () => {
    const password = u.password ? ` password='${decodeURIComponent(u.password).replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'` : "";
    const text = `host=${t.host} port = ${t.port} dbname=${name()} user=${decodeURIComponent(u.username)}${password}`;
    assert.deepEqual(await whereConnected(text), { user: decodeURIComponent(u.username), database: name(), socket: false });
  });

  test("masq migrate takes the keyword form from DATABASE_URL", async () => {
    const password = u.password ? ` password=${decodeURIComponent(u.password)}` : "";
    const text = `host=${t.host} port=${t.port} dbname=${name()} user=${decodeURIComponent(u.username)}${password}`;
    const p = spawnMasq(["migrate", "--table", "conn_kw"], { PATH: process.env.PATH, DATABASE_URL: text, MASQ_LOG_LEVEL: "warn" });
    const { code } = await p.exited;
    assert.equal(code, 0, p.lines.join("\n"));
    const db = createDb({ databaseUrl: t.url, poolSize: 1 });
    try {
      assert.equal((await db.pool.query<{ ok: boolean }>("SELECT to_regclass('public.conn_kw') IS NOT NULL AS ok")).rows[0]!.ok, true);
    } finally {
      await db.close();
    }
  });
});

// The machine's own Postgres, through its Unix socket: psql's default way in on Debian and Ubuntu.
const SOCKET_DIR = "/var/run/postgresql";
const socketSkip = existsSync(`${SOCKET_DIR}/.s.PGSQL.5432`) ? false : `no Postgres socket in ${SOCKET_DIR}`;

describe("the Unix socket, as psql reaches it", { skip: socketSkip }, () => {
  const forms = [
    `postgresql:///postgres?host=${SOCKET_DIR}&user=postgres`,
    `postgresql://postgres@${encodeURIComponent(SOCKET_DIR)}/postgres`,
    `host=${SOCKET_DIR} dbname=postgres user=postgres`,
  ];
  for (const text of forms) {
    test(text, async () => {
      assert.deepEqual(await whereConnected(text), { user: "postgres", database: "postgres", socket: true });
    });
  }

  test("a part left out falls back to the PG* variables, as in libpq", async () => {
    const saved = process.env.PGUSER;
    process.env.PGUSER = "postgres";
    try {
      assert.deepEqual(await whereConnected(`postgresql:///postgres?host=${SOCKET_DIR}`), { user: "postgres", database: "postgres", socket: true });
    } finally {
      if (saved === undefined) delete process.env.PGUSER;
      else process.env.PGUSER = saved;
    }
  });
});
