-- A vault-only erasure over every registered table (issue 17, red team of main). Plain ASCII on purpose (see 005).
--
-- The flaw: `masq subject erase --vault-only` without --table runs one erasure per registered table, and each
-- discounted only the user's rows of its own table: the user's rows of the other tables, which a vault-only erasure
-- keeps, counted as "in use", so each table's pass kept the values for the other and nothing was erased. Now an
-- erasure records whether it covers every registered table (masq.erasures.every_table, in its intent row as
-- everyTable): then a value that only this user's rows (of any registered table) and records use is the user's, and
-- goes. An erasure of one named table (--table) still keeps a value the user's rows of another table use: those rows
-- stay, and so do their values.
--
-- Also: a batch of an erasure with nothing left returns at once, without taking the vault epoch (which holds
-- ingestion up for nothing).

ALTER TABLE masq.erasures ADD COLUMN every_table boolean NOT NULL DEFAULT false;

-- 011's usage, with p_except_table NULL and p_except_user given meaning every registered table: none of the user's
-- rows counts, in any table. (No caller passed that pair before: 011's erasure always named its table.)
CREATE OR REPLACE FUNCTION masq.values_in_use(p_kinds text[], p_pseudonyms text[], p_cutoff date, p_except_table regclass, p_except_user text)
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
            USING ips, devs, p_cutoff, p_except_user, p_except_table IS NULL OR t = p_except_table;
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

-- The query (text, for EXECUTE with $1 = the user id) of the vault values this user's rows of p_table and records use
-- that nothing else uses, as (kind, p). p_every_table: the user's rows of every registered table are this erasure's
-- too, and do not keep a value.
CREATE FUNCTION masq.erase_private_values(p_table regclass, p_every_table boolean) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $q$ SELECT format(
        'WITH m AS (SELECT ''ip''::text AS kind, masked_ip::text AS p FROM %1$s WHERE user_id = $1 AND masked_ip IS NOT NULL
                    UNION SELECT ''device_id'', masked_device_id::text FROM %1$s WHERE user_id = $1 AND masked_device_id IS NOT NULL
                    UNION SELECT ''ip'', masked_ip FROM masq.quarantine WHERE user_id = $1 AND masked_ip IS NOT NULL
                    UNION SELECT ''device_id'', masked_device_id FROM masq.quarantine WHERE user_id = $1 AND masked_device_id IS NOT NULL),
              c AS MATERIALIZED (SELECT m.kind, m.p FROM m JOIN masq.vault v ON v.kind = m.kind AND v.pseudonym = m.p),
              u AS MATERIALIZED (SELECT * FROM masq.values_in_use(ARRAY(SELECT kind FROM c), ARRAY(SELECT p FROM c), NULL, %2$s, $1))
         SELECT c.kind, c.p FROM c WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.kind = c.kind AND u.pseudonym = c.p)',
        p_table, CASE WHEN p_every_table THEN 'NULL::regclass' ELSE format('%L::regclass', p_table::oid) END) $q$;
REVOKE ALL ON FUNCTION masq.erase_private_values(regclass, boolean) FROM PUBLIC;

-- 009's one-table form, kept for its callers (the --dry-run preview).
CREATE OR REPLACE FUNCTION masq.erase_private_values(p_table regclass) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $q$ SELECT masq.erase_private_values(p_table, false) $q$;

-- Step 1 (009), saying whether the erasure covers every registered table (the command names none) or only p_table.
-- 009's seven-argument form stays: one table.
CREATE FUNCTION masq.audit_subject_erase(p_reason text, p_client jsonb, p_fingerprint text, p_table regclass, p_user_id text, p_vault_only boolean,
                                         p_every_table boolean, p_key_version integer)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t regclass := masq.registered_target(p_table);
    s bigint;
    prev record;
BEGIN
    PERFORM masq.refuse_during_rotation();
    PERFORM masq.check_erase_subject(p_fingerprint, p_user_id, p_vault_only);
    IF p_every_table IS NULL THEN RAISE EXCEPTION 'every table or one: true or false' USING ERRCODE = '22023'; END IF;
    SELECT coalesce(array_agg(e.seq ORDER BY e.seq), '{}') AS seqs, coalesce(sum(e.rows), 0) AS rows,
           coalesce(sum(e.quarantine), 0) AS quarantine, coalesce(sum(e.originals), 0) AS originals, coalesce(sum(e.vault), 0) AS vault
      INTO prev FROM masq.erasures e WHERE e.user_id = p_user_id AND e.target = t;
    PERFORM masq.purge_erasures();
    -- The selector is the server's own, never the caller's: nothing else can be slipped into the trail's row.
    s := masq.audit_append('subject-erase', p_reason,
        jsonb_build_object('command', 'subject erase', 'phase', 'start', 'table', masq.erase_table_name(t), 'vaultOnly', p_vault_only,
                           'everyTable', p_every_table, 'resumes', to_jsonb(prev.seqs)),
        p_client, ARRAY[p_fingerprint], p_key_version);
    DELETE FROM masq.erasures e WHERE e.seq = ANY (prev.seqs);
    INSERT INTO masq.erasures (seq, login_role, target, user_id, vault_only, every_table, resumes, rows, quarantine, originals, vault)
    VALUES (s, session_user, t, p_user_id, p_vault_only, p_every_table, prev.seqs, prev.rows, prev.quarantine, prev.originals, prev.vault);
    RETURN s;
END $$;
REVOKE ALL ON FUNCTION masq.audit_subject_erase(text, jsonb, text, regclass, text, boolean, boolean, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION masq.audit_subject_erase(text, jsonb, text, regclass, text, boolean, boolean, integer) TO masq_erase;

-- Step 2 (011), with the erasure's scope, and nothing left: done at once, without the vault epoch. The check runs
-- before the epoch, so a row committed after it is new data (as one arriving after the erasure), never half-erased.
CREATE FUNCTION masq.erasure_has_work(j masq.erasures) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    found boolean;
BEGIN
    IF NOT j.vault_only THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE user_id = $1)', j.target) INTO found USING j.user_id;
        RETURN found OR EXISTS (SELECT 1 FROM masq.quarantine q WHERE q.user_id = j.user_id);
    END IF;
    EXECUTE format('SELECT EXISTS (%s)', masq.erase_private_values(j.target, j.every_table)) INTO found USING j.user_id;
    RETURN found OR EXISTS (SELECT 1 FROM masq.quarantine q WHERE q.user_id = j.user_id AND q.body_ciphertext IS NOT NULL);
END $$;
REVOKE ALL ON FUNCTION masq.erasure_has_work(masq.erasures) FROM PUBLIC;

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
            'WITH c AS (%2$s ORDER BY kind, p LIMIT $2),
                  d AS (DELETE FROM masq.vault v USING c WHERE v.kind = c.kind AND v.pseudonym = c.p RETURNING 1)
             SELECT count(*)::int FROM d', j.target, masq.erase_private_values(j.target, j.every_table)) INTO vault USING j.user_id, p_limit;
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

-- --dry-run (009) with the same scope: the vault values an erasure of every table, or of p_table only, would delete.
CREATE FUNCTION masq.erase_subject_preview(p_table regclass, p_user_id text, p_vault_only boolean, p_every_table boolean)
    RETURNS TABLE (rows bigint, quarantine bigint, originals bigint, vault bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t regclass := masq.registered_target(p_table);
BEGIN
    EXECUTE format(
        'SELECT (SELECT count(*) FROM %1$s WHERE user_id = $1),
                (SELECT count(*) FROM masq.quarantine WHERE user_id = $1),
                (SELECT count(*) FROM masq.quarantine WHERE user_id = $1 AND body_ciphertext IS NOT NULL),
                (SELECT count(*) FROM (%2$s) c)', t, masq.erase_private_values(t, p_every_table AND p_vault_only))
        INTO rows, quarantine, originals, vault USING p_user_id;
    IF NOT p_vault_only THEN originals := 0; ELSE rows := 0; quarantine := 0; END IF;
    RETURN NEXT;
END $$;
REVOKE ALL ON FUNCTION masq.erase_subject_preview(regclass, text, boolean, boolean) FROM PUBLIC;

CREATE FUNCTION masq.audit_subject_erase_preview(p_reason text, p_client jsonb, p_fingerprint text, p_table regclass, p_user_id text, p_vault_only boolean,
                                                 p_every_table boolean, p_key_version integer)
    RETURNS TABLE (seq bigint, rows bigint, quarantine bigint, originals bigint, vault bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t regclass := masq.registered_target(p_table);
    c record;
BEGIN
    PERFORM masq.refuse_during_rotation();
    PERFORM masq.check_erase_subject(p_fingerprint, p_user_id, p_vault_only);
    IF p_every_table IS NULL THEN RAISE EXCEPTION 'every table or one: true or false' USING ERRCODE = '22023'; END IF;
    SELECT * INTO c FROM masq.erase_subject_preview(t, p_user_id, p_vault_only, p_every_table);
    seq := masq.audit_append('subject-erase', p_reason,
        jsonb_build_object('phase', 'preview', 'table', masq.erase_table_name(t), 'vaultOnly', p_vault_only, 'everyTable', p_every_table,
                           'rows', c.rows, 'quarantine', c.quarantine, 'originals', c.originals, 'vault', c.vault),
        p_client, ARRAY[p_fingerprint], p_key_version);
    rows := c.rows; quarantine := c.quarantine; originals := c.originals; vault := c.vault;
    RETURN NEXT;
END $$;
REVOKE ALL ON FUNCTION masq.audit_subject_erase_preview(text, jsonb, text, regclass, text, boolean, boolean, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION masq.audit_subject_erase_preview(text, jsonb, text, regclass, text, boolean, boolean, integer) TO masq_erase;
