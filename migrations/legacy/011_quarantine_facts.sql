-- Facts have one home (issue 17): who a quarantine record is about and which pseudonyms it holds are written by
-- ingestion, as typed columns, from what its parser parsed; no SQL function re-parses the redacted copy to decide
-- them any more. And whether a vault value is still used is decided over every registered target table and the
-- quarantine, by erasure, retention and export alike.
-- Plain ASCII on purpose (see 005).

-- ---------------------------------------------------------------------------------------------------------------
-- 1. The columns
--
-- user_id was computed by masq.redacted_user_id (migration 007) from the redacted copy, re-parsed as jsonb: a copy
-- jsonb cannot hold (a kept field with \u0000 or a lone surrogate) named nobody, so subject export and erasure did
-- not see it. It becomes a plain column (its values kept), written by ingestion (mask/quarantine-facts.ts).
-- masked_ip and masked_device_id are the pseudonyms of the record's top-level ip and device_id (the values its
-- copy shows as "hmac:<pseudonym>", or a db_rejected record's masked row's), written by ingestion the same way, and
-- rewritten by a pseudonym key rotation with the copy.
ALTER TABLE masq.quarantine ALTER COLUMN user_id DROP EXPRESSION;
ALTER TABLE masq.quarantine
    ADD COLUMN masked_ip         text CONSTRAINT quarantine_masked_ip_check CHECK (masked_ip ~ '^[0-9a-f]{64}$'),
    ADD COLUMN masked_device_id  text CONSTRAINT quarantine_masked_device_id_check CHECK (masked_device_id ~ '^[0-9a-f]{64}$');

-- 2. The one-time backfill of records written before this migration, as best the old functions can: on the copy,
--    with every \u0000 and surrogate escape (what jsonb refuses; masq's JSON.stringify escapes only lone ones)
--    replaced by \u0001 first (an escape jsonb takes in every server encoding; U+FFFD only in UTF8), so that a copy
--    with such a value in another field still names its user. A user id that held one of them names nobody (it
--    would name another user). What it
--    cannot attribute (no copy: the body was not JSON, or its copy was dropped) keeps user_id NULL: `masq migrate`
--    says how many such records hold an original (sink/quarantine-unattributed.ts); retention removes them by age.
UPDATE masq.quarantine q SET
    user_id = coalesce(q.user_id, CASE WHEN strpos(masq.redacted_user_id(s.body, q.reason), chr(1)) = 0 THEN masq.redacted_user_id(s.body, q.reason) END),
    masked_ip = masq.redacted_pseudonym(s.body, q.reason, 'ip'),
    masked_device_id = masq.redacted_pseudonym(s.body, q.reason, 'device_id')
FROM (SELECT message_id, regexp_replace(body, '\\u(0000|d[89a-f][0-9a-f]{2})', '\\u0001', 'gi') AS body
      FROM masq.quarantine WHERE body IS NOT NULL) s
WHERE s.message_id = q.message_id;

DROP INDEX masq.quarantine_ip_pseudonym_idx;
DROP INDEX masq.quarantine_device_pseudonym_idx;
DROP FUNCTION masq.redacted_user_id(text, text);
DROP FUNCTION masq.redacted_pseudonym(text, text, text);
-- "Does any record still use P" is a lookup per kind.
CREATE INDEX quarantine_masked_ip_idx ON masq.quarantine (masked_ip) WHERE masked_ip IS NOT NULL;
CREATE INDEX quarantine_masked_device_id_idx ON masq.quarantine (masked_device_id) WHERE masked_device_id IS NOT NULL;

GRANT SELECT (masked_ip, masked_device_id) ON masq.quarantine TO masq_unmask;

-- ---------------------------------------------------------------------------------------------------------------
-- 3. Usage across everything
--
-- The vault is shared by every table masq writes: a value is in use while a row of ANY registered target table
-- (masq.target_tables, migration 007) or any quarantine record uses it. The registered tables that exist, as
-- ordinary persistent tables (a dropped one's rows are gone with it).
CREATE FUNCTION masq.target_relations() RETURNS SETOF regclass
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT t.relation FROM masq.target_tables t JOIN pg_class c ON c.oid = t.relation
    WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' ORDER BY t.relation::oid
$$;
REVOKE ALL ON FUNCTION masq.target_relations() FROM PUBLIC;

-- Which of the values (p_kinds[i], p_pseudonyms[i]) are in use, by a row of a registered target table or a
-- quarantine record. p_cutoff (retention): only rows dated on or after it (or undated) and records quarantined on or
-- after it count. p_except_user (erasure of that user's values, keeping their rows): the user's rows in
-- p_except_table and the user's quarantine records do not count; every other row does, the same user's rows in
-- other tables included. One lookup per kind per table (an index on masked_ip / masked_device_id makes it an index
-- scan) and per kind in the quarantine's indexes. VOLATILE: each statement sees every committed row.
CREATE FUNCTION masq.values_in_use(p_kinds text[], p_pseudonyms text[], p_cutoff date, p_except_table regclass, p_except_user text)
    RETURNS TABLE (kind text, pseudonym text)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    t regclass;
    ips text[] := ARRAY(SELECT DISTINCT u.p FROM unnest(p_kinds, p_pseudonyms) AS u(k, p) WHERE u.k = 'ip' AND u.p IS NOT NULL);
    devs text[] := ARRAY(SELECT DISTINCT u.p FROM unnest(p_kinds, p_pseudonyms) AS u(k, p) WHERE u.k = 'device_id' AND u.p IS NOT NULL);
    cutoff_at timestamptz := p_cutoff::timestamp AT TIME ZONE 'UTC';
BEGIN
    FOR t IN SELECT r FROM masq.target_relations() AS r LOOP
        RETURN QUERY EXECUTE format(
            'SELECT ''ip''::text, x.masked_ip::text FROM %1$s x WHERE x.masked_ip::text = ANY ($1) AND %2$s
             UNION SELECT ''device_id''::text, x.masked_device_id::text FROM %1$s x WHERE x.masked_device_id::text = ANY ($2) AND %2$s',
            t, '($3::date IS NULL OR x.create_date >= $3 OR x.create_date IS NULL) AND ($4::text IS NULL OR NOT $5 OR x.user_id IS DISTINCT FROM $4)')
            USING ips, devs, p_cutoff, p_except_user, coalesce(t = p_except_table, false);
    END LOOP;
    RETURN QUERY
        SELECT 'ip'::text, q.masked_ip FROM masq.quarantine q
        WHERE q.masked_ip = ANY (ips) AND (cutoff_at IS NULL OR q.quarantined_at >= cutoff_at)
          AND (p_except_user IS NULL OR q.user_id IS DISTINCT FROM p_except_user)
        UNION
        SELECT 'device_id'::text, q.masked_device_id FROM masq.quarantine q
        WHERE q.masked_device_id = ANY (devs) AND (cutoff_at IS NULL OR q.quarantined_at >= cutoff_at)
          AND (p_except_user IS NULL OR q.user_id IS DISTINCT FROM p_except_user);
END $$;
REVOKE ALL ON FUNCTION masq.values_in_use(text[], text[], date, regclass, text) FROM PUBLIC;

-- Erasure (migration 009): the query (text, for EXECUTE with $1 = the user id) of the vault values this user's rows
-- of p_table and quarantine records use that nothing else uses, as (kind, p).
CREATE OR REPLACE FUNCTION masq.erase_private_values(p_table regclass) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $q$ SELECT format(
        'WITH m AS (SELECT ''ip''::text AS kind, masked_ip::text AS p FROM %1$s WHERE user_id = $1 AND masked_ip IS NOT NULL
                    UNION SELECT ''device_id'', masked_device_id::text FROM %1$s WHERE user_id = $1 AND masked_device_id IS NOT NULL
                    UNION SELECT ''ip'', masked_ip FROM masq.quarantine WHERE user_id = $1 AND masked_ip IS NOT NULL
                    UNION SELECT ''device_id'', masked_device_id FROM masq.quarantine WHERE user_id = $1 AND masked_device_id IS NOT NULL),
              c AS MATERIALIZED (SELECT m.kind, m.p FROM m JOIN masq.vault v ON v.kind = m.kind AND v.pseudonym = m.p),
              u AS MATERIALIZED (SELECT * FROM masq.values_in_use(ARRAY(SELECT kind FROM c), ARRAY(SELECT p FROM c), NULL, %2$L::regclass, $1))
         SELECT c.kind, c.p FROM c WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.kind = c.kind AND u.pseudonym = c.p)',
        p_table, p_table::oid) $q$;

-- Step 2 of an erasure (migration 009), with the typed columns and usage over every registered table. Rows go from
-- the erasure's table only (`masq subject erase` names one: --table, else MASQ_TABLE); a value goes only when no
-- row of any registered table (the same user's in other tables included) and no record uses it.
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
    PERFORM masq.advance_vault_epoch();
    rows := 0; quarantine := 0; originals := 0; vault := 0;

    IF NOT j.vault_only THEN
        -- The rows (ctid: the user's table need not have a key); the pseudonyms they used are the candidates.
        EXECUTE format(
            'WITH d AS (DELETE FROM %1$s t WHERE t.ctid = ANY (ARRAY(SELECT ctid FROM %1$s WHERE user_id = $1 LIMIT $2))
                        RETURNING t.masked_ip, t.masked_device_id),
                  c AS (SELECT DISTINCT ''ip'' AS kind, masked_ip::text AS p FROM d WHERE masked_ip IS NOT NULL
                        UNION SELECT ''device_id'', masked_device_id::text FROM d WHERE masked_device_id IS NOT NULL)
             SELECT (SELECT count(*)::int FROM d), coalesce((SELECT array_agg(kind) FROM c), ''{}''), coalesce((SELECT array_agg(p) FROM c), ''{}'')',
            j.target) INTO rows, kinds, pseudonyms USING j.user_id, p_limit;
        IF rows < p_limit THEN
            WITH d AS (
                DELETE FROM masq.quarantine q WHERE q.message_id IN (
                    SELECT message_id FROM masq.quarantine WHERE user_id = j.user_id ORDER BY message_id LIMIT p_limit - rows)
                RETURNING q.masked_ip AS ip, q.masked_device_id AS dev),
            c AS (SELECT 'ip' AS kind, ip AS p FROM d WHERE ip IS NOT NULL UNION SELECT 'device_id', dev FROM d WHERE dev IS NOT NULL)
            SELECT (SELECT count(*)::int FROM d), coalesce((SELECT array_agg(kind) FROM c), '{}'), coalesce((SELECT array_agg(p) FROM c), '{}')
              INTO quarantine, qk, qp;
            kinds := kinds || qk;
            pseudonyms := pseudonyms || qp;
        END IF;
        -- A candidate stays while any remaining row (of any registered table; this user's later batches included)
        -- or record uses it.
        WITH c AS (SELECT DISTINCT u.kind, u.p FROM unnest(kinds, pseudonyms) AS u(kind, p)),
             used AS MATERIALIZED (SELECT * FROM masq.values_in_use(kinds, pseudonyms, NULL, NULL, NULL)),
             d AS (DELETE FROM masq.vault v USING c WHERE v.kind = c.kind AND v.pseudonym = c.p
                   AND NOT EXISTS (SELECT 1 FROM used x WHERE x.kind = c.kind AND x.pseudonym = c.p) RETURNING 1)
        SELECT count(*)::int INTO vault FROM d;
        done := rows = 0 AND quarantine = 0;
    ELSE
        -- Values this user's rows and records use, in the vault, that nothing else uses.
        EXECUTE format(
            'WITH c AS (%2$s ORDER BY kind, p LIMIT $2),
                  d AS (DELETE FROM masq.vault v USING c WHERE v.kind = c.kind AND v.pseudonym = c.p RETURNING 1)
             SELECT count(*)::int FROM d', j.target, masq.erase_private_values(j.target)) INTO vault USING j.user_id, p_limit;
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

-- Retention (migration 010): which of these vault entries nothing dated on or after the cutoff uses, over every
-- registered table and the quarantine, as "kind:pseudonym". p_table (checked by the caller) no longer narrows it:
-- the vault is shared, and a prune for one table must not take what another table's rows use.
CREATE OR REPLACE FUNCTION masq.retention_unused(p_table regclass, p_cutoff date, p_kinds text[], p_pseudonyms text[]) RETURNS text[]
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    unused text[];
BEGIN
    WITH used AS MATERIALIZED (SELECT * FROM masq.values_in_use(p_kinds, p_pseudonyms, p_cutoff, NULL, NULL))
    SELECT array_agg(c.kind || ':' || c.pseudonym ORDER BY c.kind, c.pseudonym) INTO unused
    FROM unnest(p_kinds, p_pseudonyms) AS c(kind, pseudonym)
    WHERE NOT EXISTS (SELECT 1 FROM used u WHERE u.kind = c.kind AND u.pseudonym = c.pseudonym);
    RETURN coalesce(unused, '{}');
END $$;

-- ---------------------------------------------------------------------------------------------------------------
-- 4. Subject export (migration 008), with the typed columns: a db_rejected record's values are its masked_ip and
--    masked_device_id, not its copy parsed again.
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
        'WITH r AS (SELECT masked_ip::text AS masked_ip, masked_device_id::text AS masked_device_id FROM %s WHERE user_id = $1
                      AND ($2::date IS NULL OR create_date >= $2) AND ($3::date IS NULL OR create_date <= $3)),
              j AS (SELECT q.masked_ip, q.masked_device_id FROM masq.quarantine q WHERE q.user_id = $1 AND q.reason = ''db_rejected''
                      AND ($2::date IS NULL OR (q.received_at AT TIME ZONE ''UTC'')::date >= $2)
                      AND ($3::date IS NULL OR (q.received_at AT TIME ZONE ''UTC'')::date <= $3)),
              p AS (SELECT ''ip''::text AS kind, masked_ip AS pseudonym FROM r
                    UNION SELECT ''device_id'', masked_device_id FROM r
                    UNION SELECT ''ip'', masked_ip FROM j
                    UNION SELECT ''device_id'', masked_device_id FROM j)
         SELECT (SELECT count(*) FROM r),
                (SELECT count(*) FROM p JOIN masq.vault v ON v.kind = p.kind AND v.pseudonym = p.pseudonym)', p_table)
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

-- The masked row is shown as the copy holds it (a db_rejected copy is the row masq refused, which its parser had
-- accepted: JSON that jsonb holds); which vault values go with it is the record's typed columns.
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
               vd.key_version AS device_key_version, vd.data_key_id AS device_data_key_id, vd.nonce AS device_nonce, vd.ciphertext AS device_ciphertext
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

-- ---------------------------------------------------------------------------------------------------------------
-- 5. The tables a subject may have rows in: `masq subject erase` and `subject export` act on every registered table
--    unless the command names one (--table or MASQ_TABLE). Their names only; each function above checks the table
--    again before it reads or deletes.
-- readable: whether the login may read the table itself (what an export of it requires, migration 008).
CREATE FUNCTION masq.registered_tables() RETURNS TABLE (schema_name text, table_name text, readable boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT n.nspname::text, c.relname::text, has_table_privilege(session_user, r, 'SELECT') FROM masq.target_relations() AS r
    JOIN pg_class c ON c.oid = r JOIN pg_namespace n ON n.oid = c.relnamespace
$$;
REVOKE ALL ON FUNCTION masq.registered_tables() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION masq.registered_tables() TO masq_erase, masq_unmask;
