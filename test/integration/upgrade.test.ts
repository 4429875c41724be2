import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import type pg from "pg";
import { auditKeyFingerprint, type AuditKey } from "../../src/keys/audit-key.ts";
import { sealAudit } from "../../src/lifecycle/audit.ts";
import { createDb, type Db, inTransaction } from "../../src/db/pool.ts";
import { LEGACY_MIGRATIONS_DIR, loadMigrations, migrate } from "../../src/db/migrate.ts";
import { ensureTargetTable } from "../../src/db/tables.ts";
import { emptyRowColumns } from "../../src/ingest/batch.ts";
import { writeBatch } from "../../src/ingest/write-batch.ts";
import { LocalKeyProvider } from "../../src/keys/key-provider.ts";
import { pseudonymKeyContext, pseudonymKeyFingerprint } from "../../src/keys/pseudonym-keys.ts";
import { TABLE, TEST_MASTER_KEY, TEST_MASTER_KEY_HEX } from "../helpers/pipeline.ts";
import { createTestDatabase } from "../helpers/postgres.ts";
import { runMasq } from "../helpers/run-masq.ts";

/**
 * A database made by an earlier masq, with data in every table of schema masq, upgrades in place to the baseline
 * (migrations/101_keys_and_vault..105_roles) with nothing lost: every row, key, vault value and audit row, whose MAC chain still verifies.
 * Two starting points: c75110e (its migrations 001-010 are migrations/legacy/001..010, unchanged since) and 216b6b2
 * (legacy 001-018). The data goes in as those versions wrote it: through their definer functions where they had them,
 * audit rows appended and sealed with MACs the current sealing code computes, other rows inserted as the schema allowed.
 */
const provider = new LocalKeyProvider(Uint8Array.from(TEST_MASTER_KEY));
const hex = (c: string) => c.repeat(64);

/** Legacy migrations up to `upTo`, with rows from before the audit chain (legacy 005 copies them) and data in every table. */
async function populatedLegacyDatabase(db: Db, upTo: 10 | 18): Promise<void> {
  const legacy = loadMigrations(LEGACY_MIGRATIONS_DIR);
  const pool = db.pool;
  await migrate(pool, legacy.filter((m) => m.version <= 4));
  await pool.query(
    "INSERT INTO masq.unmask_audit (command, reason, selector, pseudonyms, value_count) VALUES ('unmask', 'before the chain', '{}', '{a}', 1), ('pseudonym', 'also before', '{}', '{b}', 1)",
  );
  await migrate(pool, legacy.filter((m) => m.version <= upTo));
  assert.equal((await pool.query<{ v: number }>("SELECT max(version)::int AS v FROM masq.schema_migrations")).rows[0]!.v, upTo);

  await ensureTargetTable(pool, TABLE);
  await pool.query("INSERT INTO masq.target_tables (relation) VALUES ('public.user_logins'::regclass) ON CONFLICT DO NOTHING");
  await pool.query(
    `INSERT INTO public.user_logins (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
     VALUES ('u1', 'ios', $1, $2, 'en', 2003000, '2026-11-30'), ('u2', 'android', $3, $2, NULL, 1000000, '2026-12-01')`,
    [hex("a"), hex("b"), hex("c")],
  );

  // Keys: the first pseudonym key and a retired one, a data key.
  const pk = await provider.generateKey(pseudonymKeyContext(1));
  await pool.query("SELECT masq.create_first_pseudonym_key('local', $1, $2, $3)", [pk.masterKeyId, Buffer.from(pk.wrapped), pseudonymKeyFingerprint(pk.plaintext)]);
  await pool.query("INSERT INTO masq.pseudonym_keys (version, state, provider, master_key_id, fingerprint, retired_at) VALUES (2, 'retired', 'local', $1, 'feedfacefeedface', now())", [pk.masterKeyId]);
  const dk = await provider.generateKey({ purpose: "vault", keyId: "dk" });
  const dataKeyId = randomUUID();
  await pool.query("SELECT masq.add_data_key($1, 'local', $2, $3)", [dataKeyId, dk.masterKeyId, Buffer.from(dk.wrapped)]);
  // Vault values, through ingestion's function.
  await pool.query("SELECT masq.add_vault_values(1, $1, $2, $3, $4, $5)", [
    ["ip", "device_id", "ip"],
    [hex("a"), hex("b"), hex("c")],
    [dataKeyId, dataKeyId, dataKeyId],
    [randomBytes(12), randomBytes(12), randomBytes(12)],
    [randomBytes(30), randomBytes(31), randomBytes(32)],
  ]);
  // Quarantine records (at 010 user_id is computed from the copy; from 011 on ingestion writes it).
  const copy = JSON.stringify({ user_id: "u3", ip: `hmac:${hex("a")}`, device_id: `hmac:${hex("b")}` });
  if (upTo === 10) {
    await pool.query(
      `INSERT INTO masq.quarantine (message_id, reason, detail, body, body_length, sent_at, received_at, body_data_key_id, body_nonce, body_ciphertext)
       VALUES ('q1', 'missing_field', 'no device_type', $1, 90, now() - interval '2 days', now(), $2, $3, $4), ('q2', 'invalid_json', 'not JSON', NULL, 9, NULL, now(), NULL, NULL, NULL)`,
      [copy, dataKeyId, randomBytes(12), randomBytes(40)],
    );
  } else {
    await pool.query(
      `INSERT INTO masq.quarantine (message_id, reason, detail, body, body_length, sent_at, received_at, body_data_key_id, body_nonce, body_ciphertext, user_id, masked_ip, masked_device_id)
       VALUES ('q1', 'missing_field', 'no device_type', $1, 90, now() - interval '2 days', now(), $2, $3, $4, 'u3', $5, $6), ('q2', 'invalid_json', 'not JSON', NULL, 9, NULL, now(), NULL, NULL, NULL, NULL, NULL, NULL)`,
      [copy, dataKeyId, randomBytes(12), randomBytes(40), hex("a"), hex("b")],
    );
  }
  await pool.query("UPDATE masq.quarantine SET replayed_at = now() WHERE message_id = 'q2'");
  // The ledger of what was committed: the two rows and the records.
  await pool.query("INSERT INTO masq.ingest_ledger (message_id, outcome, committed_at) VALUES ('m1', 'written', now() - interval '3 days'), ('m2', 'written', now()), ('q1', 'quarantined', now()), ('q2', 'quarantined', now())");

  // The audit key and sealed rows, as each version made them.
  const ak = await provider.generateKey({ purpose: "audit", keyId: "audit-v1" });
  let key: AuditKey;
  if (upTo === 10) {
    await pool.query("SELECT masq.create_audit_key('local', $1, $2, $3)", [ak.masterKeyId, Buffer.from(ak.wrapped), auditKeyFingerprint(ak.plaintext)]);
    key = { version: 1, key: ak.plaintext, chainStart: 3n };
  } else {
    key = { version: 1, key: ak.plaintext, chainStart: 0n };
    await inTransaction(pool, async (c) => {
      const r = await c.query<{ seq: string }>("SELECT masq.create_audit_key('local', $1, $2, $3, '{}')::text AS seq", [
        ak.masterKeyId,
        Buffer.from(ak.wrapped),
        auditKeyFingerprint(ak.plaintext),
      ]);
      key.chainStart = BigInt(r.rows[0]!.seq);
      await sealAudit(c, key, r.rows[0]!.seq);
    });
  }
  for (const [i, action] of ["unmask", "subject-export", "subject-erase", "vault-prune"].entries()) {
    await inTransaction(pool, async (c) => {
      const r = await c.query<{ seq: string }>("SELECT masq.audit_append($1, $2, '{}', '{}', ARRAY['ip:x'], 1)::text AS seq", [action, `chained row ${i}`]);
      await sealAudit(c, key, r.rows[0]!.seq);
    });
  }

  // Lifecycle state: an export grant, an erasure and a rotation in progress, the rotation map, the vault epoch.
  await pool.query("INSERT INTO masq.subject_export_grants (seq, user_digest, target, from_date, to_date) VALUES (4, $1, 'public.user_logins', '2026-11-01', NULL)", [randomBytes(32)]);
  await pool.query("INSERT INTO masq.erasures (seq, login_role, target, user_id, vault_only, rows, vault) VALUES (5, current_user, 'public.user_logins', 'u9', true, 2, 3)");
  await pool.query("INSERT INTO masq.pseudonym_rotation (from_version, to_version, switched_at, target_table, phase, vault_done) VALUES (2, 1, now(), 'public.user_logins', 'table', 3)");
  await pool.query("INSERT INTO masq.pseudonym_rotation_map (kind, old_pseudonym, new_pseudonym) VALUES ('ip', $1, $2)", [hex("d"), hex("a")]);
  await pool.query("UPDATE masq.vault_epoch SET epoch = 7");
}

/** Every row of every table of schema masq (and the user's table), by table; the ledger by its own columns. */
async function snapshot(pool: pg.Pool, columnsOf?: Map<string, string[]>): Promise<Map<string, unknown[]>> {
  const tables = await pool.query<{ t: string; cols: string[] }>(
    `SELECT c.relname::text AS t, array_agg(a.attname::text ORDER BY a.attnum) AS cols
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE n.nspname = 'masq' AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname <> 'schema_migrations'
     GROUP BY c.relname`,
  );
  const out = new Map<string, unknown[]>();
  for (const { t, cols } of tables.rows) {
    // A table added after the snapshot it is compared with (columnsOf given) is checked on its own.
    if (columnsOf !== undefined && !columnsOf.has(t)) continue;
    const keep = (columnsOf?.get(t) ?? cols).filter((c) => t !== "ingest_ledger" || c !== "sent_day");
    const list = keep.map((c) => `"${c}"`).join(", ");
    out.set(t, (await pool.query(`SELECT ${list} FROM masq.${t} ORDER BY ${list}`)).rows);
  }
  out.set("public.user_logins", (await pool.query("SELECT * FROM public.user_logins ORDER BY user_id")).rows);
  return out;
}

/**
 * The migrate() of an older masq, as its commit has it (git history: CI clones it whole): its src/sink/migrate.ts,
 * the errors.ts it imports and its migrations, written to a temporary directory and imported from there.
 */
const older = mkdtempSync(path.join(os.tmpdir(), "masq-older-"));
after(() => rmSync(older, { recursive: true, force: true }));
async function olderMigrate(commit: string): Promise<(pool: pg.Pool) => Promise<unknown>> {
  const git = (...args: string[]) => execFileSync("git", args, { cwd: fileURLToPath(new URL("../../", import.meta.url)), encoding: "utf8", maxBuffer: 1 << 26 });
  const root = path.join(older, commit);
  const migrations = git("ls-tree", "--name-only", commit, "migrations/").split("\n").filter((f) => f.endsWith(".sql"));
  for (const file of ["src/sink/migrate.ts", "src/errors.ts", ...migrations]) {
    mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    writeFileSync(path.join(root, file), git("show", `${commit}:${file}`));
  }
  writeFileSync(path.join(root, "package.json"), '{ "type": "module" }\n');
  const mod = (await import(pathToFileURL(path.join(root, "src/sink/migrate.ts")).href)) as { migrate: (pool: pg.Pool) => Promise<unknown> };
  return mod.migrate;
}

/** Each older masq started against the database refuses it as newer than it knows, and changes nothing in it. */
async function olderMasqsRefuse(pool: pg.Pool): Promise<void> {
  const before = await schemaDefinition(pool);
  for (const [commit, latest] of [["c75110e", 10], ["216b6b2", 18]] as const) {
    const migrateAsOlder = await olderMigrate(commit);
    await assert.rejects(migrateAsOlder(pool), (err: Error) => {
      assert.match(err.message, new RegExp(`^the database schema is at migration ${loadMigrations().at(-1)!.version}, newer than this masq knows \\(${latest}\\)`));
      return true;
    });
    assert.deepEqual(await schemaDefinition(pool), before, `masq ${commit} changed nothing`);
  }
}

const columnsOf = (s: Map<string, unknown[]>) => new Map([...s].map(([t, rows]) => [t, Object.keys((rows[0] ?? {}))]));

/** What defines schema masq, as the catalogs hold it (the ledger's dated partitions left out: they depend on the day). */
async function schemaDefinition(pool: pg.Pool): Promise<string[]> {
  // Privileges as (grantee, privilege) pairs besides the owner's: how they were granted (in which order, or granted
  // and revoked again) makes no difference.
  const acl = (expr: string, kind: string, owner: string) =>
    `coalesce((SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT coalesce(nullif(g.grantee, 0)::regrole::text, 'PUBLIC') || ':' || g.privilege_type AS x
               FROM aclexplode(coalesce(${expr}, acldefault('${kind}', ${owner}))) g WHERE g.grantee <> ${owner}) s), '')`;
  const { rows } = await pool.query<{ d: string }>(
    `SELECT 'function ' || p.oid::regprocedure || ' ' || md5(pg_get_functiondef(p.oid)) || ' ' || ${acl("p.proacl", "f", "p.proowner")} AS d
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'masq'
     UNION ALL
     SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' ' || ${acl("c.relacl", "r", "c.relowner")} || ' ' || coalesce(pg_get_partition_constraintdef(c.oid), '')
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'masq' AND c.relname !~ '_[0-9]{8}'
     UNION ALL
     SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' ' || a.attnum || ' '
            || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' ' || coalesce(a.attacl::text, '')
       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE n.nspname = 'masq' AND a.attnum > 0 AND NOT a.attisdropped AND c.relname !~ '_[0-9]{8}'
     UNION ALL
     SELECT 'constraint ' || c.conrelid::regclass || ' ' || c.conname || ' ' || pg_get_constraintdef(c.oid)
       FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'masq' AND c.conrelid::regclass::text !~ '_[0-9]{8}'
     UNION ALL
     SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'masq' AND c.relname !~ '_[0-9]{8}'
     UNION ALL
     SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'masq' AND NOT t.tgisinternal
     UNION ALL
     SELECT 'view ' || c.relname || ' ' || pg_get_viewdef(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'masq' AND c.relkind = 'v'
     UNION ALL
     SELECT 'comment ' || obj_description(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'masq' AND obj_description(c.oid) IS NOT NULL
     UNION ALL
     SELECT 'migration ' || version || ' ' || name FROM masq.schema_migrations`,
  );
  return rows.map((r) => r.d).sort();
}

for (const upTo of [10, 18] as const) {
  describe(`a populated database of legacy migration ${upTo} (${upTo === 10 ? "c75110e" : "216b6b2"})`, () => {
    test("upgrades in place in one step: every row, key, vault value and audit row kept, the chain verifies, the schema is the baseline's", async () => {
      const pgdb = await createTestDatabase();
      const db = createDb({ databaseUrl: pgdb.url, poolSize: 3 });
      const fresh = await createTestDatabase();
      const freshDb = createDb({ databaseUrl: fresh.url });
      try {
        await populatedLegacyDatabase(db, upTo);
        const before = await snapshot(db.pool);
        for (const [t, rows] of before) assert.ok(rows.length > 0, `the legacy database has rows in ${t}`);

        const m = await migrate(db.pool);
        // The legacy migrations it lacks, the conversion to the baseline, then every migration after the baseline.
        const after = loadMigrations().filter((x) => x.version > 105).map((x) => x.name);
        assert.deepEqual(m.applied.slice(18 - upTo), ["legacy/to_baseline", ...after]);
        assert.equal(m.applied.length, 18 - upTo + 1 + after.length);
        assert.equal(m.version, loadMigrations().at(-1)!.version);
        // Again: a no-op.
        assert.deepEqual((await migrate(db.pool)).applied, []);

        // Every row of before is there, column for column (the upgrade only adds columns and the ledger's day).
        assert.deepEqual(await snapshot(db.pool, columnsOf(before)), before);
        const days = await db.pool.query<{ day: string; p: string; n: number }>(
          "SELECT sent_day::text AS day, tableoid::regclass::text AS p, count(*)::int AS n FROM masq.ingest_ledger GROUP BY 1, 2",
        );
        assert.deepEqual(days.rows, [{ day: "-infinity", p: "masq.ingest_ledger_undated", n: 4 }]);

        // The MAC chain still verifies, from the row it began at.
        const env = { DATABASE_URL: pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_LOG_LEVEL: "silent" };
        const v = await runMasq(["audit", "verify"], env);
        assert.equal(v.code, 0, v.stderr);
        assert.match(v.stdout, upTo === 10 ? /^audit trail verified: 4 row\(s\) checked; 2 row\(s\) from before the chain/ : /^audit trail verified: 5 row\(s\) checked; 2 row\(s\) from before the chain/);

        // A redelivery of a message claimed before the upgrade (its day unknown then, known now) adds nothing.
        const rows = emptyRowColumns();
        const row = { messageId: "m1", sentAt: Date.parse("2026-11-30T23:59:00Z"), receivedAt: Date.now(), bodyLength: 10, userId: "u1", deviceType: "ios", maskedIp: hex("a"), maskedDeviceId: hex("b"), locale: "en", appVersion: 2003000, createDate: "2026-11-30" };
        for (const k of Object.keys(row) as (keyof typeof row)[]) (rows[k] as unknown[]).push(row[k]);
        const again = await writeBatch(db.pool, TABLE, { keyVersion: 1, rows, quarantine: [], vault: [], vaultEpoch: null });
        assert.deepEqual([again.written, again.duplicates], [0, 1]);
        assert.equal((await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM public.user_logins")).rows[0]!.n, 2);

        // Its registered table keeps what it always had: subject user_id, the pseudonyms of ip and device_id
        // (106_contract_tables.sql).
        const registered = await db.pool.query<{ t: string; subject: string; cols: string }>(
          `SELECT t.relation::text AS t, t.subject_column::text AS subject,
                  (SELECT string_agg(p.column_name || ':' || p.kind || ':' || p.recoverable, ',' ORDER BY p.column_name) FROM masq.target_pseudonym_columns p WHERE p.relation = t.relation) AS cols
           FROM masq.target_tables t`,
        );
        assert.deepEqual(registered.rows, [{ t: "user_logins", subject: "user_id", cols: "masked_device_id:device_id:true,masked_ip:ip:true" }]);

        // The schema is the one a new database gets.
        await migrate(freshDb.pool);
        assert.deepEqual(await schemaDefinition(db.pool), await schemaDefinition(freshDb.pool));

        // An older masq (an old replica restarting in a rolling deploy) refuses either, where it would have applied
        // its legacy migrations over the baseline's functions.
        await olderMasqsRefuse(db.pool);
        await olderMasqsRefuse(freshDb.pool);
      } finally {
        await db.close();
        await freshDb.close();
        await pgdb.close();
        await fresh.close();
      }
    });
  });
}
