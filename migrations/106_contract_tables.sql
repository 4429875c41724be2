-- Privacy contracts (docs/contracts.md): the kinds a contract declares, and for each table masq writes, the column
-- that says whom a row is about and the columns that hold pseudonyms, by kind. The login table is registered with
-- what it always had: subject user_id, masked_ip of kind ip and masked_device_id of kind device_id.

-- A kind is a contract's name for a pseudonym's domain: ip and device_id for logins, any other a contract declares.
-- Same rule as contracts/contract.schema.json's kind.
ALTER TABLE masq.vault DROP CONSTRAINT vault_kind_check;
ALTER TABLE masq.vault ADD CONSTRAINT vault_kind_check CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$');
ALTER TABLE masq.pseudonym_rotation_map DROP CONSTRAINT pseudonym_rotation_map_kind_check;
ALTER TABLE masq.pseudonym_rotation_map ADD CONSTRAINT pseudonym_rotation_map_kind_check CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$');

-- The column of a registered table that holds the subject (user_id for logins; a contract's `subject` field's column).
ALTER TABLE masq.target_tables ADD COLUMN subject_column name NOT NULL DEFAULT 'user_id';

-- The columns of a registered table that hold pseudonyms: written by `masq migrate` from the contract when it
-- registers the table. recoverable: a `pseudonymize` field (its original is in the vault under kind); false for a
-- `hash` field (never in the vault).
CREATE TABLE masq.target_pseudonym_columns (
    relation     regclass NOT NULL REFERENCES masq.target_tables (relation) ON DELETE CASCADE,
    column_name  name     NOT NULL,
    kind         text     NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$'),
    recoverable  boolean  NOT NULL,
    PRIMARY KEY (relation, column_name)
);
INSERT INTO masq.target_pseudonym_columns (relation, column_name, kind, recoverable)
SELECT relation, 'masked_ip', 'ip', true FROM masq.target_tables
UNION ALL
SELECT relation, 'masked_device_id', 'device_id', true FROM masq.target_tables;

-- One kind, one treatment, across every table: a kind hashed in one table and pseudonymized in another would make a
-- hash equal to a pseudonym the vault holds, and unmask would reveal it. A contract file is checked on its own
-- (read-contract.ts); this checks it against what other contracts registered, and a registration by plain SQL.
CREATE FUNCTION masq.check_kind_treatment() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    other record;
BEGIN
    SELECT o.relation, o.column_name, o.recoverable INTO other FROM masq.target_pseudonym_columns o
    WHERE o.kind = NEW.kind AND o.recoverable <> NEW.recoverable AND (o.relation, o.column_name) IS DISTINCT FROM (NEW.relation, NEW.column_name)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'kind % is % in %.%, and one kind is either pseudonymized or hashed: give column %.% another kind',
            NEW.kind, CASE WHEN other.recoverable THEN 'pseudonymized' ELSE 'hashed' END, other.relation, other.column_name, NEW.relation, NEW.column_name
            USING ERRCODE = '23514';
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION masq.check_kind_treatment() FROM PUBLIC;

CREATE TRIGGER target_pseudonym_columns_one_treatment_per_kind BEFORE INSERT OR UPDATE ON masq.target_pseudonym_columns
    FOR EACH ROW EXECUTE FUNCTION masq.check_kind_treatment();

-- A quarantined event of a contract other than the login's: the pseudonyms its redacted copy shows, as
-- "kind:pseudonym" (a login record keeps using masked_ip and masked_device_id). user_id holds the subject.
-- Each entry "kind:pseudonym" (no NULL): what ingestion writes, so that nothing else can be planted in the column
-- that export and erasure read (a NULL element would show as "?" and fail the pattern).
ALTER TABLE masq.quarantine ADD COLUMN pseudonyms text[]
    CHECK (pseudonyms IS NULL OR array_to_string(pseudonyms, ' ', '?') ~ '^([a-z][a-z0-9_]{0,62}:[0-9a-f]{64}( |$))*$');
CREATE INDEX quarantine_pseudonyms_idx ON masq.quarantine USING gin (pseudonyms) WHERE pseudonyms IS NOT NULL;

-- Who reads the new column: as masq_unmask reads masked_ip and masked_device_id (105_roles.sql). The roles may not
-- exist where deploy/sql/login-roles.sql was not run; 105_roles.sql creates them, so they do here.
GRANT SELECT (pseudonyms) ON masq.quarantine TO masq_unmask;
-- `masq unmask --user-id` reads a registered table's rows by its subject column and pseudonym columns (no PII here).
GRANT SELECT ON masq.target_tables, masq.target_pseudonym_columns TO masq_unmask;

-- ---------------------------------------------------------------------------------------------------------------
-- The lifecycle per kind and per registered table (104_lifecycle.sql's functions, same signatures, so 105_roles.sql's
-- grants stand): each reads a table's subject column and pseudonym columns from the registry above instead of
-- user_id, masked_ip and masked_device_id, and the quarantine's pseudonyms beside its masked_ip (kind ip) and
-- masked_device_id (kind device_id). Only a recoverable column's pseudonyms have vault values: a hash column's are
-- never looked up in the vault (and a pseudonym key rotation, src/lifecycle/rewrite-tables.ts, leaves them as they are:
-- no original, no new pseudonym). Every table is still resolved by masq.registered_target / masq.target_relations
-- first, and every name reaches SQL quoted (%I, or a regclass's own quoted text).

-- p_table's subject column on alias p_alias, as text (compared with a text parameter): the column itself when it is
-- text, so that an index on it serves the lookup. Invoker's rights: the callers are the definer functions below,
-- which have resolved the table already.
CREATE FUNCTION masq.subject_sql(p_table regclass, p_alias text) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN a.atttypid IN ('text'::regtype, 'varchar'::regtype) THEN format('%I.%I', p_alias, t.subject_column)
                ELSE format('%I.%I::text', p_alias, t.subject_column) END
    FROM masq.target_tables t
    LEFT JOIN pg_attribute a ON a.attrelid = t.relation AND a.attname = t.subject_column AND NOT a.attisdropped
    WHERE t.relation = p_table
$$;
REVOKE ALL ON FUNCTION masq.subject_sql(regclass, text) FROM PUBLIC;

-- A query (text) of (kind, p): the pseudonyms of p_table's recoverable columns on the rows of p_from (an alias or
-- CTE name) that satisfy p_where; no row at all when the table has no recoverable column.
CREATE FUNCTION masq.recoverable_sql(p_table regclass, p_from text, p_where text) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce(
        string_agg(format('SELECT %L::text AS kind, x.%I::text AS p FROM %s x WHERE x.%I IS NOT NULL AND %s',
                          c.kind, c.column_name, p_from, c.column_name, p_where), ' UNION ' ORDER BY c.column_name),
        'SELECT NULL::text AS kind, NULL::text AS p WHERE false')
    FROM masq.target_pseudonym_columns c WHERE c.relation = p_table AND c.recoverable
$$;
REVOKE ALL ON FUNCTION masq.recoverable_sql(regclass, text, text) FROM PUBLIC;

-- The same for the quarantine records on alias q that satisfy p_where: masked_ip, masked_device_id and each
-- "kind:pseudonym" of pseudonyms (split at the first ':').
CREATE FUNCTION masq.quarantine_pseudonyms_sql(p_where text) RETURNS text
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT format('SELECT ''ip''::text AS kind, q.masked_ip AS p FROM masq.quarantine q WHERE q.masked_ip IS NOT NULL AND %1$s
                   UNION SELECT ''device_id'', q.masked_device_id FROM masq.quarantine q WHERE q.masked_device_id IS NOT NULL AND %1$s
                   UNION SELECT split_part(e.s, '':'', 1), substr(e.s, strpos(e.s, '':'') + 1)
                         FROM masq.quarantine q CROSS JOIN LATERAL unnest(q.pseudonyms) AS e(s) WHERE q.pseudonyms IS NOT NULL AND %1$s', p_where)
$$;
REVOKE ALL ON FUNCTION masq.quarantine_pseudonyms_sql(text) FROM PUBLIC;

-- A contract names its tables (docs/contracts.md): never one of masq's own (a registered masq.vault would be erased by
-- its kind column as a subject) or of Postgres's catalogs (a registered pg_authid would be granted to analysts).
-- 102_ingest.sql's refusal, with that case first; the registration trigger and every definer function call it.
CREATE OR REPLACE FUNCTION masq.target_refusal(p_table regclass) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$
    WITH RECURSIVE tree (rel) AS (
        SELECT p_table::oid
        UNION
        SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.rel
    ), masq_owner AS (
        SELECT nspowner FROM pg_namespace WHERE nspname = 'masq'
    ), why AS (
        SELECT c.oid, c.oid::regclass::text AS t,
            CASE
                WHEN n.nspname ~ '^(masq|pg_.*|information_schema)$' THEN
                    format('table %s is in schema %s, which holds masq''s or Postgres''s own tables: masq registers, erases and rotates only tables of other schemas',
                        c.oid::regclass, quote_ident(n.nspname))
                WHEN c.relowner <> (SELECT nspowner FROM masq_owner) THEN
                    format('table %s is owned by %s, not by %s (the owner of schema masq, whose rights erasure, retention and rotation use on it): make %s its owner (ALTER TABLE %s OWNER TO %s) or register another table',
                        c.oid::regclass, c.relowner::regrole, (SELECT nspowner FROM masq_owner)::regrole,
                        (SELECT nspowner FROM masq_owner)::regrole, c.oid::regclass, (SELECT nspowner FROM masq_owner)::regrole)
                WHEN EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal) THEN
                    format('table %s has triggers (%s) that erasure, retention and rotation would run with the rights of schema masq''s owner: drop them (DROP TRIGGER ... ON %s) or register another table',
                        c.oid::regclass, (SELECT string_agg(quote_ident(g.tgname), ', ' ORDER BY g.tgname) FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal), c.oid::regclass)
                WHEN EXISTS (SELECT 1 FROM pg_rewrite r WHERE r.ev_class = c.oid) THEN
                    format('table %s has rules (%s) that erasure, retention and rotation would run with the rights of schema masq''s owner: drop them (DROP RULE ... ON %s) or register another table',
                        c.oid::regclass, (SELECT string_agg(quote_ident(r.rulename), ', ' ORDER BY r.rulename) FROM pg_rewrite r WHERE r.ev_class = c.oid), c.oid::regclass)
                WHEN c.relrowsecurity OR c.relforcerowsecurity THEN
                    format('table %s has row-level security, whose policies erasure, retention and rotation would run with the rights of schema masq''s owner: ALTER TABLE %s NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY, or register another table',
                        c.oid::regclass, c.oid::regclass)
            END AS line
        FROM tree JOIN pg_class c ON c.oid = tree.rel JOIN pg_namespace n ON n.oid = c.relnamespace
    )
    SELECT line FROM why WHERE line IS NOT NULL ORDER BY oid = p_table::oid DESC, oid LIMIT 1
$$;
REVOKE ALL ON FUNCTION masq.target_refusal(regclass) FROM PUBLIC;

-- A registered table's day as SQL text on alias p_alias: its create_date where it has one of type date (the login
-- table's; a contract's that declares it, docs/contracts.md), else NULL::date (its rows are undated). With the date
-- conditions below written "d IS NULL OR d >= $2", an undated row is in every date range: an export limited to dates
-- shows it rather than leave it out unseen.
CREATE FUNCTION masq.day_sql(p_table regclass, p_alias text) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p_table AND a.attname = 'create_date'
                             AND NOT a.attisdropped AND a.atttypid = 'date'::regtype)
                THEN format('%I.create_date', p_alias) ELSE 'NULL::date' END
$$;
REVOKE ALL ON FUNCTION masq.day_sql(regclass, text) FROM PUBLIC;

-- Whether the login's layout is all p_table has: subject user_id, masked_ip (ip) and masked_device_id (device_id),
-- recoverable. Such a table is exported as the login rows always were (export's columns); any other table as its row
-- and its values by column.
CREATE FUNCTION masq.is_login_layout(p_table regclass) RETURNS boolean
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT EXISTS (SELECT 1 FROM masq.target_tables t WHERE t.relation = p_table AND t.subject_column = 'user_id')
       AND (SELECT array_agg(c.column_name || '=' || c.kind || '/' || c.recoverable::text ORDER BY c.column_name)
            FROM masq.target_pseudonym_columns c WHERE c.relation = p_table)
           = ARRAY['masked_device_id=device_id/true', 'masked_ip=ip/true']
       -- and the login's columns, no more and no fewer: a contract's table that registers the same pseudonym columns
       -- but holds other columns is exported as its whole row (the login's columns would leave some out, or not exist).
       AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
            WHERE a.attrelid = p_table AND a.attnum > 0 AND NOT a.attisdropped)
           = ARRAY['app_version', 'create_date', 'device_type', 'locale', 'masked_device_id', 'masked_ip', 'user_id']
$$;
REVOKE ALL ON FUNCTION masq.is_login_layout(regclass) FROM PUBLIC;

-- Which of the values (p_kinds[i], p_pseudonyms[i]) are in use (104_lifecycle.sql says when): per registered table,
-- one lookup per recoverable column with a value of its kind asked (= ANY: an index on the column makes it an index
-- scan); in the quarantine, by masked_ip, masked_device_id and pseudonyms (&&: its GIN index). A table without a
-- create_date column has no dated rows: every row of it counts whatever the cutoff.
CREATE OR REPLACE FUNCTION masq.values_in_use(p_kinds text[], p_pseudonyms text[], p_cutoff date, p_except_table regclass, p_except_user text)
    RETURNS TABLE (kind text, pseudonym text)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    t regclass;
    c record;
    wanted text[];
    dated boolean;
    ips text[] := ARRAY(SELECT DISTINCT u.p FROM unnest(p_kinds, p_pseudonyms) AS u(k, p) WHERE u.k = 'ip' AND u.p IS NOT NULL);
    devs text[] := ARRAY(SELECT DISTINCT u.p FROM unnest(p_kinds, p_pseudonyms) AS u(k, p) WHERE u.k = 'device_id' AND u.p IS NOT NULL);
    entries text[] := ARRAY(SELECT DISTINCT u.k || ':' || u.p FROM unnest(p_kinds, p_pseudonyms) AS u(k, p) WHERE u.k IS NOT NULL AND u.p IS NOT NULL);
    cutoff_at timestamptz := p_cutoff::timestamp AT TIME ZONE 'UTC';
BEGIN
    FOR t IN SELECT r FROM masq.target_relations() AS r LOOP
        dated := EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t AND a.attname = 'create_date' AND NOT a.attisdropped AND a.atttypid = 'date'::regtype);
        FOR c IN SELECT pc.column_name, pc.kind FROM masq.target_pseudonym_columns pc WHERE pc.relation = t AND pc.recoverable ORDER BY pc.column_name LOOP
            wanted := ARRAY(SELECT DISTINCT u.p FROM unnest(p_kinds, p_pseudonyms) AS u(k, p) WHERE u.k = c.kind AND u.p IS NOT NULL);
            CONTINUE WHEN cardinality(wanted) = 0;
            RETURN QUERY EXECUTE format(
                'SELECT DISTINCT %L::text, x.%I::text FROM %s x WHERE x.%I::text = ANY ($1) AND %s AND ($3::text IS NULL OR NOT $4 OR %s IS DISTINCT FROM $3)',
                c.kind, c.column_name, t, c.column_name,
                CASE WHEN dated THEN '($2::date IS NULL OR x.create_date >= $2 OR x.create_date IS NULL)' ELSE 'true' END,
                masq.subject_sql(t, 'x'))
                USING wanted, p_cutoff, p_except_user, p_except_table IS NULL OR t = p_except_table;
        END LOOP;
    END LOOP;
    RETURN QUERY
        SELECT 'ip'::text, q.masked_ip FROM masq.quarantine q
        WHERE q.masked_ip = ANY (ips) AND (cutoff_at IS NULL OR q.quarantined_at >= cutoff_at)
          AND (p_except_user IS NULL OR q.user_id IS DISTINCT FROM p_except_user)
        UNION
        SELECT 'device_id'::text, q.masked_device_id FROM masq.quarantine q
        WHERE q.masked_device_id = ANY (devs) AND (cutoff_at IS NULL OR q.quarantined_at >= cutoff_at)
          AND (p_except_user IS NULL OR q.user_id IS DISTINCT FROM p_except_user)
        UNION
        SELECT split_part(e.s, ':', 1), substr(e.s, strpos(e.s, ':') + 1)
        FROM masq.quarantine q CROSS JOIN LATERAL unnest(q.pseudonyms) AS e(s)
        WHERE q.pseudonyms IS NOT NULL AND q.pseudonyms && entries AND e.s = ANY (entries)
          AND (cutoff_at IS NULL OR q.quarantined_at >= cutoff_at)
          AND (p_except_user IS NULL OR q.user_id IS DISTINCT FROM p_except_user);
END $$;

-- The query of the vault values this user's rows of p_table and records use that nothing else uses (104_lifecycle.sql).
CREATE OR REPLACE FUNCTION masq.erase_private_values(p_table regclass, p_every_table boolean) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $q$ SELECT format(
        'WITH m AS (%1$s UNION %2$s),
              c AS MATERIALIZED (SELECT m.kind, m.p FROM m JOIN masq.vault v ON v.kind = m.kind AND v.pseudonym = m.p),
              u AS MATERIALIZED (SELECT * FROM masq.values_in_use(ARRAY(SELECT kind FROM c), ARRAY(SELECT p FROM c), NULL, %3$s, $1))
         SELECT c.kind, c.p FROM c WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.kind = c.kind AND u.pseudonym = c.p)',
        masq.recoverable_sql(p_table, p_table::text, masq.subject_sql(p_table, 'x') || ' = $1'),
        masq.quarantine_pseudonyms_sql('q.user_id = $1'),
        CASE WHEN p_every_table THEN 'NULL::regclass' ELSE format('%L::regclass', p_table::oid) END) $q$;

CREATE OR REPLACE FUNCTION masq.erasure_has_work(j masq.erasures) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    found boolean;
BEGIN
    IF NOT j.vault_only THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s x WHERE %s = $1)', j.target, masq.subject_sql(j.target, 'x')) INTO found USING j.user_id;
        RETURN found OR EXISTS (SELECT 1 FROM masq.quarantine q WHERE q.user_id = j.user_id);
    END IF;
    EXECUTE format('SELECT EXISTS (%s)', masq.erase_private_values(j.target, j.every_table)) INTO found USING j.user_id;
    RETURN found OR EXISTS (SELECT 1 FROM masq.quarantine q WHERE q.user_id = j.user_id AND q.body_ciphertext IS NOT NULL);
END $$;

-- Step 2 of an erasure (104_lifecycle.sql says what it deletes), over the erasure's table's subject and recoverable
-- columns, and the quarantine records' pseudonyms as candidates too.
CREATE OR REPLACE FUNCTION masq.erase_subject_batch(p_seq bigint, p_limit integer)
    RETURNS TABLE (rows integer, quarantine integer, originals integer, vault integer, done boolean)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    j masq.erasures%ROWTYPE;
    kinds text[] := '{}';
    pseudonyms text[] := '{}';
    qk text[];
    qp text[];
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
        RAISE EXCEPTION 'a batch is 1 to 100000' USING ERRCODE = '22023';
    END IF;
    -- One runner per erasure at a time: a second waits here.
    SELECT * INTO j FROM masq.erasures e WHERE e.seq = p_seq FOR UPDATE;
    IF NOT FOUND OR j.login_role <> session_user THEN
        RAISE EXCEPTION 'no erasure % in progress of this login', p_seq USING ERRCODE = '42501';
    END IF;
    PERFORM masq.registered_target(j.target);
    PERFORM masq.refuse_during_rotation();
    rows := 0; quarantine := 0; originals := 0; vault := 0;
    IF NOT masq.erasure_has_work(j) THEN
        done := true;
        UPDATE masq.erasures e SET touched_at = now() WHERE e.seq = p_seq;
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM masq.advance_vault_epoch();

    IF NOT j.vault_only THEN
        -- The rows (ctid: the user's table need not have a key); the pseudonyms their recoverable columns held are
        -- the candidates.
        EXECUTE format(
            'WITH d AS (DELETE FROM %1$s t WHERE t.ctid = ANY (ARRAY(SELECT x.ctid FROM %1$s x WHERE %2$s = $1 LIMIT $2)) RETURNING t.*),
                  c AS (%3$s)
             SELECT (SELECT count(*)::int FROM d), coalesce((SELECT array_agg(kind) FROM c), ''{}''), coalesce((SELECT array_agg(p) FROM c), ''{}'')',
            j.target, masq.subject_sql(j.target, 'x'), masq.recoverable_sql(j.target, 'd', 'true'))
            INTO rows, kinds, pseudonyms USING j.user_id, p_limit;
        IF rows < p_limit THEN
            WITH d AS (
                DELETE FROM masq.quarantine q WHERE q.message_id IN (
                    SELECT message_id FROM masq.quarantine WHERE user_id = j.user_id ORDER BY message_id LIMIT p_limit - rows)
                RETURNING q.masked_ip AS ip, q.masked_device_id AS dev, q.pseudonyms),
            c AS (SELECT 'ip' AS kind, ip AS p FROM d WHERE ip IS NOT NULL
                  UNION SELECT 'device_id', dev FROM d WHERE dev IS NOT NULL
                  UNION SELECT split_part(e.s, ':', 1), substr(e.s, strpos(e.s, ':') + 1) FROM d CROSS JOIN LATERAL unnest(d.pseudonyms) AS e(s))
            SELECT (SELECT count(*)::int FROM d), coalesce((SELECT array_agg(kind) FROM c), '{}'), coalesce((SELECT array_agg(p) FROM c), '{}')
              INTO quarantine, qk, qp;
            kinds := kinds || qk;
            pseudonyms := pseudonyms || qp;
        END IF;
        -- A candidate stays while any remaining row (of any registered table; this user's later batches and, erasing
        -- every table, their rows of the tables still to come included) or record uses it: those rows go, and with
        -- the last of them the value.
        WITH c AS (SELECT DISTINCT u.kind, u.p FROM unnest(kinds, pseudonyms) AS u(kind, p)),
             used AS MATERIALIZED (SELECT * FROM masq.values_in_use(kinds, pseudonyms, NULL, NULL, NULL)),
             d AS (DELETE FROM masq.vault v USING c WHERE v.kind = c.kind AND v.pseudonym = c.p
                   AND NOT EXISTS (SELECT 1 FROM used x WHERE x.kind = c.kind AND x.pseudonym = c.p) RETURNING 1)
        SELECT count(*)::int INTO vault FROM d;
        done := rows = 0 AND quarantine = 0;
    ELSE
        -- Values this user's rows (of this table, or erasing every table, of any) and records use, in the vault, that
        -- nothing else uses: the rows stay, so they cannot be left to a later pass.
        EXECUTE format(
            'WITH c AS (%1$s ORDER BY kind, p LIMIT $2),
                  d AS (DELETE FROM masq.vault v USING c WHERE v.kind = c.kind AND v.pseudonym = c.p RETURNING 1)
             SELECT count(*)::int FROM d', masq.erase_private_values(j.target, j.every_table)) INTO vault USING j.user_id, p_limit;
        IF vault < p_limit THEN
            WITH d AS (
                UPDATE masq.quarantine q SET body_data_key_id = NULL, body_nonce = NULL, body_ciphertext = NULL
                WHERE q.message_id IN (SELECT message_id FROM masq.quarantine WHERE user_id = j.user_id AND body_ciphertext IS NOT NULL
                                       ORDER BY message_id LIMIT p_limit - vault)
                RETURNING 1)
            SELECT count(*)::int INTO originals FROM d;
        END IF;
        done := vault = 0 AND originals = 0;
    END IF;

    UPDATE masq.erasures e SET touched_at = now(), rows = e.rows + erase_subject_batch.rows, quarantine = e.quarantine + erase_subject_batch.quarantine,
        originals = e.originals + erase_subject_batch.originals, vault = e.vault + erase_subject_batch.vault
    WHERE e.seq = p_seq;
    RETURN NEXT;
END $$;

CREATE OR REPLACE FUNCTION masq.erase_subject_preview(p_table regclass, p_user_id text, p_vault_only boolean, p_every_table boolean)
    RETURNS TABLE (rows bigint, quarantine bigint, originals bigint, vault bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t regclass := masq.registered_target(p_table);
BEGIN
    EXECUTE format(
        'SELECT (SELECT count(*) FROM %1$s x WHERE %2$s = $1),
                (SELECT count(*) FROM masq.quarantine WHERE user_id = $1),
                (SELECT count(*) FROM masq.quarantine WHERE user_id = $1 AND body_ciphertext IS NOT NULL),
                (SELECT count(*) FROM (%3$s) c)', t, masq.subject_sql(t, 'x'), masq.erase_private_values(t, p_every_table AND p_vault_only))
        INTO rows, quarantine, originals, vault USING p_user_id;
    IF NOT p_vault_only THEN originals := 0; ELSE rows := 0; quarantine := 0; END IF;
    RETURN NEXT;
END $$;

-- Subject export, step 1 (104_lifecycle.sql): the values counted are those of the table's recoverable columns, and
-- those of the user's db_rejected records (their masked_ip and masked_device_id, or a contract's record's pseudonyms).
CREATE OR REPLACE FUNCTION masq.audit_subject_export(p_reason text, p_selector jsonb, p_client jsonb, p_user_id text, p_fingerprint text,
                                                     p_table regclass, p_from date, p_to date, p_key_version integer)
    RETURNS TABLE (seq bigint, row_count bigint, value_count bigint, quarantined bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM masq.check_export_target(p_table);
    -- A digest of a guessable user id can be brute-forced: none outlives its use by more than one export.
    DELETE FROM masq.subject_export_grants g WHERE g.at < clock_timestamp() - interval '10 minutes';
    IF p_user_id IS NULL OR p_user_id = '' THEN RAISE EXCEPTION 'a user id is needed' USING ERRCODE = '22023'; END IF;
    IF p_fingerprint IS NULL OR p_fingerprint !~ '^v[0-9]+:[0-9a-f]{32}$' THEN
        RAISE EXCEPTION 'not a subject fingerprint' USING ERRCODE = '22023';
    END IF;
    EXECUTE format(
        'WITH r AS MATERIALIZED (SELECT x.* FROM %1$s x WHERE %2$s = $1
                      AND ($2::date IS NULL OR %4$s IS NULL OR %4$s >= $2) AND ($3::date IS NULL OR %4$s IS NULL OR %4$s <= $3)),
              j AS (SELECT q.masked_ip, q.masked_device_id, q.pseudonyms FROM masq.quarantine q WHERE q.user_id = $1 AND q.reason = ''db_rejected''
                      AND ($2::date IS NULL OR (q.received_at AT TIME ZONE ''UTC'')::date >= $2)
                      AND ($3::date IS NULL OR (q.received_at AT TIME ZONE ''UTC'')::date <= $3)),
              p AS (%3$s
                    UNION SELECT ''ip'', masked_ip FROM j
                    UNION SELECT ''device_id'', masked_device_id FROM j
                    UNION SELECT split_part(e.s, '':'', 1), substr(e.s, strpos(e.s, '':'') + 1) FROM j CROSS JOIN LATERAL unnest(j.pseudonyms) AS e(s))
         SELECT (SELECT count(*) FROM r),
                (SELECT count(*) FROM p JOIN masq.vault v ON v.kind = p.kind AND v.pseudonym = p.p)',
        p_table, masq.subject_sql(p_table, 'x'), masq.recoverable_sql(p_table, 'r', 'true'), masq.day_sql(p_table, 'x'))
        INTO row_count, value_count USING p_user_id, p_from, p_to;
    SELECT count(*) INTO quarantined FROM masq.quarantine q
    WHERE q.user_id = p_user_id AND (p_from IS NULL OR (q.received_at AT TIME ZONE 'UTC')::date >= p_from)
      AND (p_to IS NULL OR (q.received_at AT TIME ZONE 'UTC')::date <= p_to);
    seq := masq.audit_append('subject-export', p_reason,
        coalesce(p_selector, '{}') || jsonb_build_object('table', masq.qualified_name(p_table), 'from', p_from, 'to', p_to,
                                                        'rows', row_count, 'values', value_count, 'quarantined', quarantined),
        p_client, ARRAY[p_fingerprint], p_key_version);
    INSERT INTO masq.subject_export_grants (seq, user_digest, target, from_date, to_date)
    VALUES (seq, masq.subject_digest(seq, p_user_id), p_table, p_from, p_to);
    RETURN NEXT;
END $$;

-- Step 2, the rows. A table of the login's layout (masq.is_login_layout) comes in the columns the login export always
-- had; any other as: user_id (its subject, as text), create_date, row_json (the row as jsonb) and vault_values (a
-- jsonb array, one entry per recoverable column: column, kind, pseudonym, and its vault entry's key_version,
-- data_key_id, nonce and ciphertext in base64, NULL where the vault has none).
CREATE OR REPLACE FUNCTION masq.subject_export_rows(p_seq bigint, p_user_id text) RETURNS refcursor
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    g masq.subject_export_grants%ROWTYPE;
    c refcursor;
    joins text;
    entries text;
BEGIN
    g := masq.subject_export_grant(p_seq, p_user_id);
    IF masq.is_login_layout(g.target) THEN
        OPEN c FOR EXECUTE format(
            'SELECT t.user_id::text AS user_id, t.device_type::text AS device_type, t.masked_ip::text AS masked_ip,
                    t.masked_device_id::text AS masked_device_id, t.locale::text AS locale, t.app_version::bigint AS app_version,
                    to_char(t.create_date, ''YYYY-MM-DD'') AS create_date,
                    vi.key_version AS ip_key_version, vi.data_key_id AS ip_data_key_id, vi.nonce AS ip_nonce, vi.ciphertext AS ip_ciphertext,
                    vd.key_version AS device_key_version, vd.data_key_id AS device_data_key_id, vd.nonce AS device_nonce, vd.ciphertext AS device_ciphertext
             FROM %s t
             LEFT JOIN masq.vault vi ON vi.kind = ''ip'' AND vi.pseudonym = t.masked_ip
             LEFT JOIN masq.vault vd ON vd.kind = ''device_id'' AND vd.pseudonym = t.masked_device_id
             WHERE t.user_id = $1 AND ($2::date IS NULL OR t.create_date >= $2) AND ($3::date IS NULL OR t.create_date <= $3)
             ORDER BY t.create_date, t.ctid', g.target)
            USING p_user_id, g.from_date, g.to_date;
        RETURN c;
    END IF;
    SELECT coalesce(string_agg(format(' LEFT JOIN masq.vault v%1$s ON v%1$s.kind = %2$L AND v%1$s.pseudonym = x.%3$I::text', n, kind, column_name), '' ORDER BY n), ''),
           coalesce(string_agg(format('jsonb_build_object(''column'', %1$L, ''kind'', %2$L, ''pseudonym'', x.%3$I::text, ''key_version'', v%4$s.key_version,
                       ''data_key_id'', v%4$s.data_key_id, ''nonce'', encode(v%4$s.nonce, ''base64''), ''ciphertext'', encode(v%4$s.ciphertext, ''base64''))',
                       column_name, kind, column_name, n), ', ' ORDER BY n), '')
      INTO joins, entries
      FROM (SELECT pc.column_name, pc.kind, row_number() OVER (ORDER BY pc.column_name) AS n
            FROM masq.target_pseudonym_columns pc WHERE pc.relation = g.target AND pc.recoverable) cols;
    OPEN c FOR EXECUTE format(
        'SELECT %2$s AS user_id, to_char(%5$s, ''YYYY-MM-DD'') AS create_date, to_jsonb(x) AS row_json,
                jsonb_build_array(%3$s) AS vault_values
         FROM %1$s x%4$s
         WHERE %2$s = $1 AND ($2::date IS NULL OR %5$s IS NULL OR %5$s >= $2) AND ($3::date IS NULL OR %5$s IS NULL OR %5$s <= $3)
         ORDER BY %5$s, x.ctid', g.target, masq.subject_sql(g.target, 'x'), entries, joins, masq.day_sql(g.target, 'x'))
        USING p_user_id, g.from_date, g.to_date;
    RETURN c;
END $$;

-- The values a subject export served: those of the grant's table's recoverable columns on the user's rows.
CREATE OR REPLACE FUNCTION masq.revealed_values(p_reveal bigint, p_user_id text) RETURNS TABLE (kind text, pseudonym text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    g masq.subject_export_grants%ROWTYPE;
BEGIN
    IF p_user_id IS NULL THEN
        RETURN QUERY SELECT split_part(s, ':', 1), substr(s, strpos(s, ':') + 1)
                     FROM unnest(masq.committed_reveal(p_reveal, 'unmask')) AS s;
        RETURN;
    END IF;
    g := masq.subject_export_grant(p_reveal, p_user_id);
    RETURN QUERY EXECUTE masq.recoverable_sql(g.target, g.target::text,
        format('%1$s = $1 AND ($2::date IS NULL OR %2$s IS NULL OR %2$s >= $2) AND ($3::date IS NULL OR %2$s IS NULL OR %2$s <= $3)',
               masq.subject_sql(g.target, 'x'), masq.day_sql(g.target, 'x')))
        USING p_user_id, g.from_date, g.to_date;
END $$;

-- The table retention checks is one masq writes and has what retention reads: a date column create_date, and each of
-- its registered pseudonym columns as text (a login table: masked_ip and masked_device_id, as before).
CREATE OR REPLACE FUNCTION masq.check_prune_target(p_table regclass, p_days integer) RETURNS regclass
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t regclass := masq.registered_target(p_table);
    missing text;
BEGIN
    IF p_days IS NULL OR p_days < 1 OR p_days > 36500 THEN
        RAISE EXCEPTION 'a retention period is 1 to 36500 days' USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(w.col, ', ' ORDER BY w.ord, w.col) INTO missing
    FROM (SELECT pc.column_name::text AS col, 1 AS ord, ARRAY['text'::regtype, 'varchar'::regtype] AS types
          FROM masq.target_pseudonym_columns pc WHERE pc.relation = t
          UNION ALL SELECT 'create_date', 2, ARRAY['date'::regtype]) w
    WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t AND NOT a.attisdropped AND a.attname = w.col AND a.atttypid = ANY (w.types));
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'table % is not a table masq writes (it lacks %, of the type masq writes)', t, missing USING ERRCODE = '22023';
    END IF;
    RETURN t;
END $$;

-- Subject export, the quarantine records: as 104_lifecycle.sql's, and for a db_rejected record of a contract (one
-- with pseudonyms) vault_values: its "kind:pseudonym" entries that the vault holds, with their ciphertexts (a jsonb
-- array of kind, pseudonym, key_version, data_key_id, nonce and ciphertext in base64; NULL for any other record).
CREATE OR REPLACE FUNCTION masq.subject_export_quarantine(p_seq bigint, p_user_id text) RETURNS refcursor
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    g masq.subject_export_grants%ROWTYPE;
    c refcursor;
BEGIN
    g := masq.subject_export_grant(p_seq, p_user_id);
    OPEN c FOR
        SELECT q.message_id, q.reason, q.received_at, q.replayed_at, q.body_data_key_id, q.body_nonce, q.body_ciphertext,
               m.masked_row,
               vi.key_version AS ip_key_version, vi.data_key_id AS ip_data_key_id, vi.nonce AS ip_nonce, vi.ciphertext AS ip_ciphertext,
               vd.key_version AS device_key_version, vd.data_key_id AS device_data_key_id, vd.nonce AS device_nonce, vd.ciphertext AS device_ciphertext,
               CASE WHEN q.reason = 'db_rejected' AND q.pseudonyms IS NOT NULL THEN
                   (SELECT coalesce(jsonb_agg(jsonb_build_object('kind', v.kind, 'pseudonym', v.pseudonym, 'key_version', v.key_version,
                                                                'data_key_id', v.data_key_id, 'nonce', encode(v.nonce, 'base64'),
                                                                'ciphertext', encode(v.ciphertext, 'base64')) ORDER BY v.kind, v.pseudonym), '[]')
                    FROM unnest(q.pseudonyms) AS e(s)
                    JOIN masq.vault v ON v.kind = split_part(e.s, ':', 1) AND v.pseudonym = substr(e.s, strpos(e.s, ':') + 1))
               END AS vault_values
        FROM masq.quarantine q
        CROSS JOIN LATERAL (SELECT CASE WHEN q.reason = 'db_rejected' AND q.body IS NOT NULL THEN q.body::jsonb END AS masked_row) m
        LEFT JOIN masq.vault vi ON q.reason = 'db_rejected' AND vi.kind = 'ip' AND vi.pseudonym = q.masked_ip
        LEFT JOIN masq.vault vd ON q.reason = 'db_rejected' AND vd.kind = 'device_id' AND vd.pseudonym = q.masked_device_id
        WHERE q.user_id = p_user_id
          AND (g.from_date IS NULL OR (q.received_at AT TIME ZONE 'UTC')::date >= g.from_date)
          AND (g.to_date IS NULL OR (q.received_at AT TIME ZONE 'UTC')::date <= g.to_date)
        ORDER BY q.received_at, q.message_id;
    RETURN c;
END $$;

-- `masq run` and the Lambda handler with a contract check at start that each table they write is registered as the
-- contract writes it (src/db/verify-contract-tables.ts): the ingest role reads the registry (no PII in it).
GRANT SELECT ON masq.target_tables, masq.target_pseudonym_columns TO masq_ingest;
