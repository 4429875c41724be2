-- `masq subject export` and audited quarantine originals (`masq quarantine show --original`, `quarantine replay
-- --body-file`), on the two-transaction reveal of migration 005: step 1 appends a sealed audit row and commits, step
-- 2 hands out only what that committed, recent row of this login covers.
--
-- An export row names the user by the fingerprint the client computes with the audit key (src/audit/
-- subject-fingerprint.ts): the trail never holds the user id. The database cannot check a fingerprint (it has no
-- key), so step 2 is bound to the user id itself: step 1 keeps sha256(seq:user id) in masq.subject_export_grants,
-- which no role but the owner reads, and step 2 serves the rows of the user id that matches it, nothing else. The
-- counts in the row (rows, values, quarantined) are the server's, not the client's. A grant is useful for the ten
-- minutes that masq.committed_reveal allows; every step 1 first deletes the ones older than that (so the grant of
-- the last export stays until the next one starts).
-- Plain ASCII on purpose (see 005).

-- seq is an export row of masq.audit (no foreign key: it would make masq.audit's refusal of TRUNCATE another error).
CREATE TABLE masq.subject_export_grants (
    seq          bigint      PRIMARY KEY,
    user_digest  bytea       NOT NULL,
    target       regclass    NOT NULL,
    from_date    date,
    to_date      date,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
REVOKE ALL ON masq.subject_export_grants FROM PUBLIC;

CREATE FUNCTION masq.subject_digest(p_seq bigint, p_user_id text) RETURNS bytea
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT sha256(convert_to(p_seq::text || ':' || p_user_id, 'UTF8')) $$;
REVOKE ALL ON FUNCTION masq.subject_digest(bigint, text) FROM PUBLIC;

-- The functions below read the table as the owner, so before they read it: it must be a table masq writes
-- (masq.registered_target, migration 007: never a temporary table or a view of the caller's own, whose functions
-- would run with the owner's rights, nor a copy the caller filled with another user's pseudonyms), and the login's
-- own right to read it is the export's authorisation to (masq_unmask is granted SELECT on it by
-- deploy/sql/login-roles.sql).
CREATE FUNCTION masq.check_export_target(p_table regclass) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM masq.registered_target(p_table);
    IF NOT has_table_privilege(session_user, p_table, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied for table %', p_table USING ERRCODE = '42501';
    END IF;
END $$;
REVOKE ALL ON FUNCTION masq.check_export_target(regclass) FROM PUBLIC;

-- The table as the audit row names it: schema-qualified whatever the search_path.
CREATE FUNCTION masq.qualified_name(p_table regclass) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_table
$$;
REVOKE ALL ON FUNCTION masq.qualified_name(regclass) FROM PUBLIC;

-- A db_rejected record keeps no original: its copy is the masked row the table refused (commit-batch.ts), whose
-- maskedIp and maskedDeviceId are pseudonyms of the vault, as the row's would have been. The export shows that row
-- with its values, which step 1 counts with the rows' (a record of the user names the user: quarantine.user_id,
-- migration 007, is computed from that copy's userId).
--
-- Step 1: counts what the export will show (the user's rows in the date range, the distinct vault values they and
-- the user's db_rejected records use, the user's quarantine records), appends the row and keeps the grant. Returns
-- the unsealed row's seq.
CREATE FUNCTION masq.audit_subject_export(p_reason text, p_selector jsonb, p_client jsonb, p_user_id text, p_fingerprint text,
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
              j AS (SELECT q.body::jsonb AS b FROM masq.quarantine q WHERE q.user_id = $1 AND q.reason = ''db_rejected''
                      AND ($2::date IS NULL OR (q.received_at AT TIME ZONE ''UTC'')::date >= $2)
                      AND ($3::date IS NULL OR (q.received_at AT TIME ZONE ''UTC'')::date <= $3)),
              p AS (SELECT ''ip''::text AS kind, masked_ip AS pseudonym FROM r
                    UNION SELECT ''device_id'', masked_device_id FROM r
                    UNION SELECT ''ip'', b ->> ''maskedIp'' FROM j
                    UNION SELECT ''device_id'', b ->> ''maskedDeviceId'' FROM j)
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
REVOKE ALL ON FUNCTION masq.audit_subject_export(text, jsonb, jsonb, text, text, regclass, date, date, integer) FROM PUBLIC;

-- The grant of a committed, recent export row of this login, for exactly this user id.
CREATE FUNCTION masq.subject_export_grant(p_seq bigint, p_user_id text) RETURNS masq.subject_export_grants
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    g masq.subject_export_grants%ROWTYPE;
BEGIN
    PERFORM masq.committed_reveal(p_seq, 'subject-export');
    SELECT * INTO g FROM masq.subject_export_grants WHERE seq = p_seq AND user_digest = masq.subject_digest(p_seq, p_user_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit row % does not record an export of this user', p_seq USING ERRCODE = '42501';
    END IF;
    PERFORM masq.check_export_target(g.target);
    RETURN g;
END $$;
REVOKE ALL ON FUNCTION masq.subject_export_grant(bigint, text) FROM PUBLIC;

-- Step 2, the rows: a cursor (FETCH it in pages, in this transaction) over the user's rows of the table in the
-- row's date range, each with the ciphertexts of its ip and device_id (NULL where the vault has none).
CREATE FUNCTION masq.subject_export_rows(p_seq bigint, p_user_id text) RETURNS refcursor
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    g masq.subject_export_grants%ROWTYPE;
    c refcursor;
BEGIN
    g := masq.subject_export_grant(p_seq, p_user_id);
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
END $$;
REVOKE ALL ON FUNCTION masq.subject_export_rows(bigint, text) FROM PUBLIC;

-- Step 2, the quarantine: a cursor over the user's quarantine records (received in the date range), with the
-- encrypted original where one is kept; for a db_rejected record, the masked row and the ciphertexts of its ip and
-- device_id (NULL where the vault has none).
CREATE FUNCTION masq.subject_export_quarantine(p_seq bigint, p_user_id text) RETURNS refcursor
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
        -- A record that names its user has a JSON copy (masq.redacted_user_id parsed it).
        CROSS JOIN LATERAL (SELECT CASE WHEN q.reason = 'db_rejected' THEN q.body::jsonb END AS masked_row) m
        LEFT JOIN masq.vault vi ON vi.kind = 'ip' AND vi.pseudonym = m.masked_row ->> 'maskedIp'
        LEFT JOIN masq.vault vd ON vd.kind = 'device_id' AND vd.pseudonym = m.masked_row ->> 'maskedDeviceId'
        WHERE q.user_id = p_user_id
          AND (g.from_date IS NULL OR (q.received_at AT TIME ZONE 'UTC')::date >= g.from_date)
          AND (g.to_date IS NULL OR (q.received_at AT TIME ZONE 'UTC')::date <= g.to_date)
        ORDER BY q.received_at, q.message_id;
    RETURN c;
END $$;
REVOKE ALL ON FUNCTION masq.subject_export_quarantine(bigint, text) FROM PUBLIC;

-- `masq quarantine show <id> --original`, step 1: records the one record, if it keeps an original.
-- (The same arguments as masq.audit_reveal_bodies, so that both reveals share their code.)
CREATE FUNCTION masq.audit_quarantine_original(p_reason text, p_selector jsonb, p_client jsonb, p_message_ids text[], p_key_version integer)
    RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT masq.audit_append('quarantine-original', p_reason, p_selector, p_client,
        (SELECT coalesce(array_agg(q.message_id ORDER BY q.message_id), '{}') FROM masq.quarantine q
         WHERE q.message_id = ANY (p_message_ids) AND q.body_ciphertext IS NOT NULL),
        p_key_version)
$$;
REVOKE ALL ON FUNCTION masq.audit_quarantine_original(text, jsonb, jsonb, text[], integer) FROM PUBLIC;

-- ... step 2: the encrypted original that committed row names.
CREATE FUNCTION masq.quarantine_original(p_seq bigint)
    RETURNS TABLE (message_id text, body_data_key_id uuid, body_nonce bytea, body_ciphertext bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT q.message_id, q.body_data_key_id, q.body_nonce, q.body_ciphertext
    FROM unnest(masq.committed_reveal(p_seq, 'quarantine-original')) AS s(message_id)
    JOIN masq.quarantine q ON q.message_id = s.message_id
    WHERE q.body_ciphertext IS NOT NULL
    ORDER BY q.message_id
$$;
REVOKE ALL ON FUNCTION masq.quarantine_original(bigint) FROM PUBLIC;

-- `masq quarantine replay --id <id> --body-file <file>`: records the corrected replay and its reason. Names no
-- subject (no original is handed out: the operator brings the body), so it opens nothing in step 2.
CREATE FUNCTION masq.audit_replay_corrected(p_reason text, p_selector jsonb, p_client jsonb, p_message_id text, p_key_version integer)
    RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT masq.audit_append('replay', p_reason,
        coalesce(p_selector, '{}') || jsonb_build_object('message', p_message_id, 'corrected_body', true), p_client, '{}', p_key_version)
$$;
REVOKE ALL ON FUNCTION masq.audit_replay_corrected(text, jsonb, jsonb, text, integer) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION masq.audit_subject_export(text, jsonb, jsonb, text, text, regclass, date, date, integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.subject_export_rows(bigint, text) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.subject_export_quarantine(bigint, text) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_quarantine_original(text, jsonb, jsonb, text[], integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.quarantine_original(bigint) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_replay_corrected(text, jsonb, jsonb, text, integer) TO masq_unmask;
