import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { usePipelineFixture } from "../helpers/fixture.ts";
import { TEST_MASTER_KEY_HEX } from "../helpers/pipeline.ts";
import { runMasq } from "../helpers/run-masq.ts";

/**
 * What a red-team review of the contract registry found, each refused or handled in the database itself (so that a
 * registration or a record made by plain SQL gets no further than one made through masq's commands).
 */
describe("the contract registry's guards", () => {
  const fx = usePipelineFixture();
  const env = () => ({ DATABASE_URL: fx.pgdb.url, MASQ_MASTER_KEY: TEST_MASTER_KEY_HEX, MASQ_LOG_LEVEL: "silent" });
  const hex = (c: string) => c.repeat(64);

  test("masq's own tables and Postgres's catalogs cannot be registered, even by the owner with plain SQL", async () => {
    for (const t of ["masq.vault", "masq.quarantine", "pg_catalog.pg_authid", "information_schema.sql_features"]) {
      await assert.rejects(fx.db.pool.query("INSERT INTO masq.target_tables (relation, subject_column) VALUES ($1::regclass, 'kind')", [t]), /which holds masq's or Postgres's own tables/, t);
    }
  });

  test("one kind is pseudonymized or hashed, across every registered table", async () => {
    await fx.db.pool.query("DROP TABLE IF EXISTS public.kinds_a, public.kinds_b");
    await fx.db.pool.query("CREATE TABLE public.kinds_a (account_id text, masked_email text, create_date date)");
    await fx.db.pool.query("CREATE TABLE public.kinds_b (account_id text, email_hash text, ip_hash text, create_date date)");
    await fx.db.pool.query("INSERT INTO masq.target_tables (relation, subject_column) VALUES ('public.kinds_a', 'account_id'), ('public.kinds_b', 'account_id')");
    await fx.db.pool.query("INSERT INTO masq.target_pseudonym_columns VALUES ('public.kinds_a', 'masked_email', 'email', true)");
    await assert.rejects(
      fx.db.pool.query("INSERT INTO masq.target_pseudonym_columns VALUES ('public.kinds_b', 'email_hash', 'email', false)"),
      /kind email is pseudonymized in public\.kinds_a\.masked_email/,
    );
    // The login table registers ip as pseudonymized: nobody hashes ip.
    await assert.rejects(fx.db.pool.query("INSERT INTO masq.target_pseudonym_columns VALUES ('public.kinds_b', 'ip_hash', 'ip', false)"), /kind ip is pseudonymized in public\.user_logins\.masked_ip/);
    await fx.db.pool.query("INSERT INTO masq.target_pseudonym_columns VALUES ('public.kinds_b', 'email_hash', 'email_hashed', false)");
  });

  test("a quarantine record's pseudonyms are kind:pseudonym entries, nothing else", async () => {
    await fx.reset();
    const insert = (id: string, pseudonyms: (string | null)[]) =>
      fx.db.pool.query("INSERT INTO masq.quarantine (message_id, reason, detail, body_length, received_at, pseudonyms) VALUES ($1, 'wrong_type', 'x', 1, now(), $2)", [id, pseudonyms]);
    await insert("ok-1", [`email:${hex("a")}`, `card_last4:${hex("b")}`]);
    await insert("ok-2", []);
    for (const bad of [["email"], [`Email:${hex("a")}`], [`email:${hex("a")} x`], [`email:${hex("a")}`, null], [`email:${"a".repeat(63)}`]]) {
      await assert.rejects(insert("bad", bad), /quarantine_pseudonyms_check/, JSON.stringify(bad));
    }
  });

  test("a table without create_date exports all its rows, also with --from; one shaped like logins with more columns exports whole", async () => {
    await fx.reset();
    await fx.db.pool.query("DROP TABLE IF EXISTS public.clicks, public.logins_plus");
    await fx.db.pool.query("CREATE TABLE public.clicks (account_id text, page text)");
    await fx.db.pool.query("INSERT INTO public.clicks VALUES ('acc-1', '/pricing'), ('acc-1', '/docs'), ('acc-2', '/')");
    await fx.db.pool.query("INSERT INTO masq.target_tables (relation, subject_column) VALUES ('public.clicks', 'account_id')");
    for (const from of [[], ["--from", "2026-01-01"]]) {
      const r = await runMasq(["subject", "export", "--user-id", "acc-1", "--reason", "access request 9", "--format", "json", ...from], env());
      assert.equal(r.code, 0, r.stderr);
      const rows = (JSON.parse(r.stdout) as { source: string; table?: string; columns?: { page: string } }[]).filter((l) => l.table === "public.clicks");
      assert.deepEqual(rows.map((l) => l.columns!.page).sort(), ["/docs", "/pricing"], `rows of an undated table, ${from.join(" ") || "no dates"}`);
    }

    // The login's subject and pseudonym columns, and a country beside them: exported as its row, country included.
    await fx.db.pool.query(
      "CREATE TABLE public.logins_plus (user_id text, device_type text, masked_ip text, masked_device_id text, locale text, app_version integer, create_date date, country text)",
    );
    await fx.db.pool.query(`INSERT INTO public.logins_plus VALUES ('acc-1', 'ios', '${hex("c")}', '${hex("d")}', 'en', 1000000, current_date, 'DE')`);
    await fx.db.pool.query("INSERT INTO masq.target_tables (relation, subject_column) VALUES ('public.logins_plus', 'user_id')");
    await fx.db.pool.query("INSERT INTO masq.target_pseudonym_columns VALUES ('public.logins_plus', 'masked_ip', 'ip', true), ('public.logins_plus', 'masked_device_id', 'device_id', true)");
    const r = await runMasq(["subject", "export", "--user-id", "acc-1", "--table", "logins_plus", "--reason", "access request 9", "--format", "json"], env());
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as { source: string; columns?: { country: string } }[];
    assert.deepEqual(rows.filter((l) => l.source === "contract_row").map((l) => l.columns!.country), ["DE"]);
  });
});
