import { randomBytes } from "node:crypto";
import pg from "pg";
import { startEmbeddedPostgres, type EmbeddedPg } from "../../src/ops/demo.ts";

/**
 * A fresh database for one test file: on the Postgres named by DATABASE_URL when set (CI runs the suite against
 * the machine's Postgres too), else on an embedded Postgres started for this file. Real Postgres either way.
 */
export interface TestDatabase {
  url: string;
  host: string;
  port: number;
  /** Present when the server is embedded, so a test can stop and restart the real server. */
  embedded?: EmbeddedPg;
  /** The same database reached through another host:port (a proxy), for outage tests. */
  urlVia(port: number): string;
  close(): Promise<void>;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const external = process.env.DATABASE_URL;
  // One retry: on a loaded machine another process can take the free port between its choice and the server's bind.
  const embedded = external ? undefined : await startEmbeddedPostgres().catch(() => startEmbeddedPostgres());
  const adminUrl = external ?? embedded!.url;
  const name = `masq_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const host = url.hostname || "127.0.0.1";
  const port = Number(url.port || 5432);
  return {
    url: url.toString(),
    host,
    port,
    ...(embedded ? { embedded } : {}),
    urlVia(p: number) {
      const u = new URL(url);
      u.hostname = "127.0.0.1";
      u.port = String(p);
      return u.toString();
    },
    async close() {
      if (embedded) return embedded.stop();
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}
