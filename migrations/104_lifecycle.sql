-- The lifecycle of the data: subject export, audited quarantine originals, subject erasure, retention, pseudonym key
-- rotation, and the bounded waits that keep them and ingestion from holding each other up. Every deletion and every
-- reveal runs through the SECURITY DEFINER functions here, which decide what may go or be shown and append its audit
-- row; masq_unmask and masq_erase have no DELETE on masq's tables. Plain ASCII on purpose (see 101_keys_and_vault.sql).

-- ---------------------------------------------------------------------------------------------------------------
-- Tables

-- `masq subject erase` (SECURITY.md, "Erasure"). An erasure is an audit row of intent (action 'subject-erase', phase
-- 'start': who, when, why, the user's keyed fingerprint, the mode), then bounded batches, each its own transaction,
-- then an audit row of what was deleted (phase 'done', the counts the server kept). The batches take the user and
-- the table from the row here, never from the caller, so every deletion belongs to a committed intent row. The user
-- id is kept here only while the erasure runs (it is in the user's table in clear anyway); the 'done' step deletes
-- it. A run that was killed leaves its row: the next run for the same user and table takes its counts over and names
-- it in its own rows. One that nobody resumes is purged a day after its last batch, by the next erasure's start or
-- done step or retention's next batch (masq.purge_erasures): its start row in the trail stays, the user id does not.
-- every_table: the erasure covers every registered table (the command named none; --vault-only then erases a value
-- that only this user's rows, of any registered table, and records use), or only target.
CREATE TABLE masq.erasures (
    seq          bigint      PRIMARY KEY,  -- its intent row in masq.audit (no foreign key: the trail is restored wholesale by its owner)
    login_role   text        NOT NULL,
    target       regclass    NOT NULL,
    user_id      text        NOT NULL,
    vault_only   boolean     NOT NULL,
    resumes      bigint[]    NOT NULL DEFAULT '{}',
    rows         bigint      NOT NULL DEFAULT 0,
    quarantine   bigint      NOT NULL DEFAULT 0,
    originals    bigint      NOT NULL DEFAULT 0,
    vault        bigint      NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    touched_at   timestamptz NOT NULL DEFAULT now(),  -- its last batch
    every_table  boolean     NOT NULL DEFAULT false
);
REVOKE ALL ON masq.erasures FROM PUBLIC;

-- Pseudonym key rotation (`masq rotate pseudonym-key`): the state of a rotation in progress, so that an interrupted
-- one resumes where it stopped. Both tables are empty except during a rotation, and only the owner reads them:
-- the map links pseudonyms under the old key to those under the new one, and is emptied when the old key retires.
-- A rotation rewrites every registered target table: the vault and the rotation map are shared by all of them, and
-- retirement empties the map, so a table left out would keep old pseudonyms that match no vault value.

-- At most one rotation at a time (one 'retiring' key): a row from the switch to the retirement of the old key.
CREATE TABLE masq.pseudonym_rotation (
    from_version      integer     PRIMARY KEY REFERENCES masq.pseudonym_keys (version),
    to_version        integer     NOT NULL REFERENCES masq.pseudonym_keys (version),
    -- Taken once the switch held the old key's row: every batch written under the old key began before it, every
    -- batch under the new key after it (the quarantine pass selects the old-key records by it).
    switched_at       timestamptz NOT NULL,
    target_table      text        NOT NULL,
    phase             text        NOT NULL CHECK (phase IN ('vault', 'quarantine', 'table')),
    vault_done        bigint      NOT NULL DEFAULT 0,
    -- The quarantine pass goes in message_id order; the last record done.
    quarantine_after  text,
    quarantine_done   bigint      NOT NULL DEFAULT 0,
    -- The table pass takes the tables one after another, each in physical blocks: [0, table_block_done) of
    -- target_table is done, of table_blocks (the table's size when the pass began: rows added later are under the new
    -- key). table_relfilenode notices a rewrite of the table (VACUUM FULL, CLUSTER), after which block numbers mean
    -- nothing and the pass starts the table over. table_rows_done counts the rows of every table.
    table_blocks      bigint,
    table_block_done  bigint      NOT NULL DEFAULT 0,
    table_relfilenode oid,
    table_rows_done   bigint      NOT NULL DEFAULT 0,
    -- Pseudonyms in kept bodies that no vault row maps (replaced by a marker): expected to stay 0.
    unmapped          bigint      NOT NULL DEFAULT 0,
    -- Vault values and pseudonyms that the rotation found planted or unreadable (counted, then dropped).
    forged            bigint      NOT NULL DEFAULT 0,
    tables_done       text[]      NOT NULL DEFAULT '{}'
);
-- At most one rotation at a time, whatever the code does: a second row collides on this index.
CREATE UNIQUE INDEX pseudonym_rotation_one_at_a_time ON masq.pseudonym_rotation ((true));
COMMENT ON COLUMN masq.pseudonym_rotation.target_table IS
    'The table the table pass is on (the one named at the start, --table or MASQ_TABLE, until the pass moves on); the cursor columns are this table''s';
COMMENT ON COLUMN masq.pseudonym_rotation.tables_done IS
    'The tables the table pass has finished, as schema.name, in order; the old key retires once every registered table is among them';

-- Old pseudonym -> new, per kind: filled by the vault pass, read by the quarantine and table passes.
CREATE TABLE masq.pseudonym_rotation_map (
    kind           text NOT NULL CHECK (kind IN ('ip', 'device_id')),
    old_pseudonym  text NOT NULL,
    new_pseudonym  text NOT NULL,
    PRIMARY KEY (kind, old_pseudonym)
);

-- ---------------------------------------------------------------------------------------------------------------
-- Subject export and quarantine originals

-- The functions below read the table as the owner, so before they read it: it must be a table masq writes
-- (masq.registered_target: never a temporary table or a view of the caller's own, whose functions would run with
-- the owner's rights, nor a copy the caller filled with another user's pseudonyms), and the login's own right to
-- read it is the export's authorisation to (masq_unmask is granted SELECT on it by deploy/sql/login-roles.sql).
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

CREATE FUNCTION masq.subject_digest(p_seq bigint, p_user_id text) RETURNS bytea
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT sha256(convert_to(p_seq::text || ':' || p_user_id, 'UTF8')) $$;
REVOKE ALL ON FUNCTION masq.subject_digest(bigint, text) FROM PUBLIC;

-- Step 1: counts what the export will show (the user's rows in the date range, the distinct vault values they and
-- the user's records use, the user's quarantine records), appends the row and keeps the grant. Returns the unsealed
-- row's seq. A db_rejected record keeps no original: its copy is the masked row the table refused, and its values are
-- its masked_ip and masked_device_id, which the export shows with it.
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

-- The masked row is shown as the copy holds it (a db_rejected copy is the row masq refused, which its parser had
-- accepted: JSON that jsonb holds); which vault values go with it is the record's typed columns.
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
        CROSS JOIN LATERAL (SELECT CASE WHEN q.reason = 'db_rejected' AND q.body IS NOT NULL THEN q.body::jsonb END AS masked_row) m
        LEFT JOIN masq.vault vi ON q.reason = 'db_rejected' AND vi.kind = 'ip' AND vi.pseudonym = q.masked_ip
        LEFT JOIN masq.vault vd ON q.reason = 'db_rejected' AND vd.kind = 'device_id' AND vd.pseudonym = q.masked_device_id
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

-- ---------------------------------------------------------------------------------------------------------------
-- Whether a vault value is still used, decided over every registered target table and the quarantine, by erasure,
-- retention and export alike.

-- Which of the values (p_kinds[i], p_pseudonyms[i]) are in use, by a row of a registered target table or a
-- quarantine record. p_cutoff (retention): only rows dated on or after it (or undated) and records quarantined on or
-- after it count. p_except_user (erasure of that user's values, keeping their rows): the user's rows in
-- p_except_table (in every registered table when p_except_table is NULL) and the user's quarantine records do not
-- count; every other row does. One lookup per kind per table (an index on masked_ip / masked_device_id makes it an
-- index scan) and per kind in the quarantine's indexes. VOLATILE: each statement sees every committed row.
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

-- ---------------------------------------------------------------------------------------------------------------
-- Subject erasure
--
-- The target table is the caller's to name, but only a table masq writes (masq.registered_target): these functions
-- run with the owner's rights, and a temporary table or view of the caller's, or any other table with the same
-- columns, would have them delete (or run triggers) as the owner. The erasure keeps the regclass, and each batch
-- checks it again.

-- No deletion while a pseudonym key rotation is in progress (a rotation stopped mid-way, to be resumed, included):
-- after its vault pass the vault holds the new pseudonyms while rows and records still carry the old ones, so "no
-- row uses P" would be decided on the wrong pseudonyms and a value another user still needs could go.
CREATE FUNCTION masq.refuse_during_rotation() RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM masq.pseudonym_rotation) THEN
        RAISE EXCEPTION 'a pseudonym key rotation is in progress: finish it first (masq rotate pseudonym-key --resume, as the schema owner), then run this again'
            USING ERRCODE = '55000';
    END IF;
END $$;
REVOKE ALL ON FUNCTION masq.refuse_during_rotation() FROM PUBLIC;

-- The table as the trail names it: schema-qualified whatever the search_path.
CREATE FUNCTION masq.erase_table_name(p_table regclass) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_table $$;
REVOKE ALL ON FUNCTION masq.erase_table_name(regclass) FROM PUBLIC;

-- What the caller says about the subject: a fingerprint (how the trail names them), a user id of 1 to 128
-- characters, a mode.
CREATE FUNCTION masq.check_erase_subject(p_fingerprint text, p_user_id text, p_vault_only boolean) RETURNS void
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF p_fingerprint IS NULL OR p_fingerprint !~ '^v[0-9]+:[0-9a-f]{32}$' THEN
        RAISE EXCEPTION 'a subject is named by its fingerprint' USING ERRCODE = '22023';
    END IF;
    IF p_user_id IS NULL OR length(p_user_id) < 1 OR length(p_user_id) > 128 OR p_vault_only IS NULL THEN
        RAISE EXCEPTION 'a user id is 1 to 128 characters' USING ERRCODE = '22023';
    END IF;
END $$;
REVOKE ALL ON FUNCTION masq.check_erase_subject(text, text, boolean) FROM PUBLIC;

-- Erasures killed and not resumed for a day: their rows (and the user ids in clear) go.
CREATE FUNCTION masq.purge_erasures() RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ DELETE FROM masq.erasures WHERE touched_at < now() - interval '1 day' $$;
REVOKE ALL ON FUNCTION masq.purge_erasures() FROM PUBLIC;

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

-- Whether the erasure has anything left, checked before the vault epoch is taken, so a row committed after it is new
-- data (as one arriving after the erasure), never half-erased.
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

-- Step 1: the intent row (unsealed: the caller seals it, then commits) and the erasure it starts, saying whether it
-- covers every registered table (the command names none) or only p_table.
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

-- Step 2, repeated (each call its own transaction): at most p_limit of the user's rows of the erasure's table, then
-- of their quarantine records, are deleted, and with them every vault value those used that no remaining row of any
-- registered table and no remaining quarantine record uses. With vault_only the rows and records stay: up to p_limit
-- vault values that only this user's rows (of the erasure's table, or of every table when it covers every_table)
-- and records use are deleted, and the encrypted originals of the user's quarantine records (the values in clear)
-- are dropped. done when a call found nothing left to do; an erasure with nothing left returns at once, without
-- taking the vault epoch (masq.erasure_has_work).
CREATE FUNCTION masq.erase_subject_batch(p_seq bigint, p_limit integer)
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
REVOKE ALL ON FUNCTION masq.erase_subject_batch(bigint, integer) FROM PUBLIC;

-- Step 3: the row of what was deleted (the server's counts, over the run and the runs it resumed), unsealed: the
-- caller seals it, then commits. The erasure, and the user id it held, are gone with that commit.
CREATE FUNCTION masq.audit_subject_erased(p_seq bigint, p_client jsonb, p_key_version integer)
    RETURNS TABLE (seq bigint, rows bigint, quarantine bigint, originals bigint, vault bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    j masq.erasures%ROWTYPE;
    a masq.audit%ROWTYPE;
BEGIN
    SELECT * INTO j FROM masq.erasures e WHERE e.seq = p_seq FOR UPDATE;
    IF NOT FOUND OR j.login_role <> session_user THEN
        RAISE EXCEPTION 'no erasure % in progress of this login', p_seq USING ERRCODE = '42501';
    END IF;
    SELECT * INTO a FROM masq.audit x WHERE x.seq = p_seq;
    seq := masq.audit_append('subject-erase', a.reason,
        jsonb_build_object('phase', 'done', 'start', p_seq, 'table', a.selector -> 'table', 'vaultOnly', j.vault_only, 'resumes', to_jsonb(j.resumes),
                           'rows', j.rows, 'quarantine', j.quarantine, 'originals', j.originals, 'vault', j.vault),
        p_client, a.subjects, p_key_version);
    DELETE FROM masq.erasures e WHERE e.seq = p_seq;
    PERFORM masq.purge_erasures();
    rows := j.rows; quarantine := j.quarantine; originals := j.originals; vault := j.vault;
    RETURN NEXT;
END $$;
REVOKE ALL ON FUNCTION masq.audit_subject_erased(bigint, jsonb, integer) FROM PUBLIC;

-- What an erasure would delete now, changing nothing (owner only: masq_erase calls it through the audited function
-- below), with the same scope: every table, or p_table only.
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

-- --dry-run: the counts, with an audit row (action 'subject-erase', phase 'preview', the user's fingerprint, the
-- counts), unsealed: the caller seals it, then commits. Audited because the counts answer "does this user exist, and
-- how much data do they have" for any id the caller names: the trail shows who asked about whom, as it does for an
-- erasure.
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

-- ---------------------------------------------------------------------------------------------------------------
-- Retention (MASQ_VAULT_RETENTION_DAYS, `masq vault prune`, docs/operations.md "Retention"): vault entries that no
-- row newer than the retention period uses, and quarantine records older than it, are deleted, in bounded batches,
-- each batch with its own audit row ('vault-prune').
--
-- The cutoff is a day: the target table's create_date is the day of the message's SentTimestamp (UTC), so "older
-- than N days" means create_date < today (UTC) - N, and a quarantine record is older than the period when it was
-- quarantined before 00:00 UTC of that day. Deletion runs only through the functions below, which decide what may go;
-- each deleting call appends its own audit row (counted by the server), which must be sealed before commit: pruning
-- needs the audit key, so the master key, as well as the role. A batch that deletes vault entries advances the vault
-- epoch first, so that no row ingestion is committing is left without its entry.

-- The first day that is still inside a retention period of p_days days.
CREATE FUNCTION masq.retention_cutoff(p_days integer) RETURNS date
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT (now() AT TIME ZONE 'UTC')::date - p_days $$;

-- The table prune checks for rows is one masq writes (masq.registered_target: never a caller's
-- temporary table or view, whose triggers, policies or functions would run as the owner) and has masq's layout (the
-- columns it reads, with their types): a prune pointed at another table would find no recent row and delete values
-- that are still used.
CREATE FUNCTION masq.check_prune_target(p_table regclass, p_days integer) RETURNS regclass
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t regclass := masq.registered_target(p_table);
BEGIN
    IF p_days IS NULL OR p_days < 1 OR p_days > 36500 THEN
        RAISE EXCEPTION 'a retention period is 1 to 36500 days' USING ERRCODE = '22023';
    END IF;
    IF (SELECT count(*) FROM pg_attribute a
        WHERE a.attrelid = t AND NOT a.attisdropped AND (
              (a.attname IN ('masked_ip', 'masked_device_id') AND a.atttypid IN ('text'::regtype, 'varchar'::regtype))
           OR (a.attname = 'create_date' AND a.atttypid = 'date'::regtype))) <> 3 THEN
        RAISE EXCEPTION 'table % is not a table masq writes (masked_ip, masked_device_id, create_date)', t USING ERRCODE = '22023';
    END IF;
    RETURN t;
END $$;
REVOKE ALL ON FUNCTION masq.check_prune_target(regclass, integer) FROM PUBLIC;

-- Which of these vault entries nothing dated on or after the cutoff uses, over every registered table and the
-- quarantine, as "kind:pseudonym". p_table (checked by the caller) does not narrow it: the vault is shared, and a
-- prune for one table must not take what another table's rows use.
CREATE FUNCTION masq.retention_unused(p_table regclass, p_cutoff date, p_kinds text[], p_pseudonyms text[]) RETURNS text[]
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
REVOKE ALL ON FUNCTION masq.retention_unused(regclass, date, text[], text[]) FROM PUBLIC;

-- One batch of the vault pass: the next p_limit vault entries after the cursor (p_after_kind, p_after_pseudonym),
-- in primary key order, and of those the ones that no row of p_table dated on or after the cutoff (nor a row
-- without a date) and no quarantine record from on or after the cutoff uses. Two lookups per batch in the target
-- table, by masked_ip and by masked_device_id: an index on either column (docs/operations.md, "Retention") makes
-- them index scans; masq does not create one on the user's table.
--
-- p_key_version NULL: a dry run, which deletes nothing and writes no audit row. Otherwise the prunable entries are
-- deleted and, if there were any, an audit row names them ("kind:pseudonym"); the caller seals it before COMMIT.
-- Returns the batch's size, the entries pruned (or prunable), the audit row (or NULL) and the cursor to go on from
-- (NULL when the vault has no entry after this batch).
CREATE FUNCTION masq.vault_prune_batch(p_table regclass, p_days integer, p_after_kind text, p_after_pseudonym text,
                                       p_limit integer, p_client jsonb, p_key_version integer)
    RETURNS TABLE (scanned integer, pruned integer, seq bigint, next_kind text, next_pseudonym text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cutoff date := masq.retention_cutoff(p_days);
    t regclass := masq.check_prune_target(p_table, p_days);
    kinds text[];
    pseudonyms text[];
    gone text[];
BEGIN
    PERFORM masq.refuse_during_rotation();
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
        RAISE EXCEPTION 'a prune batch is 1 to 10000 entries' USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(b.kind ORDER BY b.kind, b.pseudonym), array_agg(b.pseudonym ORDER BY b.kind, b.pseudonym)
    INTO kinds, pseudonyms
    FROM (SELECT v.kind, v.pseudonym FROM masq.vault v
          WHERE (v.kind, v.pseudonym) > (coalesce(p_after_kind, ''), coalesce(p_after_pseudonym, ''))
          ORDER BY v.kind, v.pseudonym LIMIT p_limit) b;
    IF kinds IS NULL THEN
        RETURN QUERY SELECT 0, 0, NULL::bigint, NULL::text, NULL::text;
        RETURN;
    END IF;
    gone := masq.retention_unused(t, cutoff, kinds, pseudonyms);
    IF p_key_version IS NOT NULL AND cardinality(gone) > 0 THEN
        -- Only a batch that deletes advances the vault epoch (so ingestion's sealers forget what they knew only
        -- when something went): it waits for ingest batches in flight, and holds new ones until COMMIT. The
        -- candidates are then checked again, by statements that see what those batches committed (migration 009).
        PERFORM masq.advance_vault_epoch();
        gone := masq.retention_unused(t, cutoff,
            ARRAY(SELECT split_part(g, ':', 1) FROM unnest(gone) AS g ORDER BY g),
            ARRAY(SELECT split_part(g, ':', 2) FROM unnest(gone) AS g ORDER BY g));
    END IF;
    IF p_key_version IS NULL OR cardinality(gone) = 0 THEN
        RETURN QUERY SELECT cardinality(kinds), cardinality(gone), NULL::bigint, kinds[cardinality(kinds)], pseudonyms[cardinality(kinds)];
        RETURN;
    END IF;
    DELETE FROM masq.vault v USING unnest(gone) AS g(subject)
    WHERE v.kind = split_part(g.subject, ':', 1) AND v.pseudonym = split_part(g.subject, ':', 2);
    RETURN QUERY SELECT cardinality(kinds), cardinality(gone),
        masq.audit_append('vault-prune', format('retention %s days', p_days),
            jsonb_build_object('pass', 'vault', 'table', masq.erase_table_name(t), 'retention_days', p_days, 'cutoff', cutoff::text),
            p_client, gone, p_key_version),
        kinds[cardinality(kinds)], pseudonyms[cardinality(kinds)];
END $$;
REVOKE ALL ON FUNCTION masq.vault_prune_batch(regclass, integer, text, text, integer, jsonb, integer) FROM PUBLIC;

-- One batch of the quarantine pass: up to p_limit records quarantined before the cutoff (oldest first), deleted
-- with an audit row naming their message ids; p_key_version NULL counts them all and deletes nothing.
CREATE FUNCTION masq.quarantine_prune_batch(p_days integer, p_limit integer, p_client jsonb, p_key_version integer)
    RETURNS TABLE (pruned integer, seq bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cutoff date := masq.retention_cutoff(p_days);
    ids text[];
BEGIN
    PERFORM masq.refuse_during_rotation();
    PERFORM masq.purge_erasures();  -- retention of erase's own state (migration 009)
    IF p_days IS NULL OR p_days < 1 OR p_days > 36500 THEN
        RAISE EXCEPTION 'a retention period is 1 to 36500 days' USING ERRCODE = '22023';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
        RAISE EXCEPTION 'a prune batch is 1 to 10000 records' USING ERRCODE = '22023';
    END IF;
    IF p_key_version IS NULL THEN
        RETURN QUERY SELECT count(*)::int, NULL::bigint FROM masq.quarantine WHERE quarantined_at < cutoff::timestamp AT TIME ZONE 'UTC';
        RETURN;
    END IF;
    SELECT array_agg(q.message_id ORDER BY q.message_id) INTO ids
    FROM (SELECT message_id FROM masq.quarantine WHERE quarantined_at < cutoff::timestamp AT TIME ZONE 'UTC'
          ORDER BY quarantined_at, message_id LIMIT p_limit) q;
    IF ids IS NULL THEN
        RETURN QUERY SELECT 0, NULL::bigint;
        RETURN;
    END IF;
    DELETE FROM masq.quarantine WHERE message_id = ANY (ids);
    RETURN QUERY SELECT cardinality(ids),
        masq.audit_append('vault-prune', format('retention %s days', p_days),
            jsonb_build_object('pass', 'quarantine', 'retention_days', p_days, 'cutoff', cutoff::text),
            p_client, ids, p_key_version);
END $$;
REVOKE ALL ON FUNCTION masq.quarantine_prune_batch(integer, integer, jsonb, integer) FROM PUBLIC;

-- Whether a lock in mode a and one in mode b on the same object conflict (the table of "Explicit Locking" in the
-- PostgreSQL manual; pg_locks' mode names).
CREATE FUNCTION masq.lock_modes_conflict(a text, b text) RETURNS boolean
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT b = ANY (CASE a
        WHEN 'AccessShareLock' THEN ARRAY['AccessExclusiveLock']
        WHEN 'RowShareLock' THEN ARRAY['ExclusiveLock', 'AccessExclusiveLock']
        WHEN 'RowExclusiveLock' THEN ARRAY['ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock']
        WHEN 'ShareUpdateExclusiveLock' THEN ARRAY['ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock']
        WHEN 'ShareLock' THEN ARRAY['RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock']
        WHEN 'ShareRowExclusiveLock' THEN ARRAY['RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock']
        WHEN 'ExclusiveLock' THEN ARRAY['RowShareLock', 'RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock']
        WHEN 'AccessExclusiveLock' THEN ARRAY['AccessShareLock', 'RowShareLock', 'RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock']
        ELSE ARRAY[]::text[] END) $$;
REVOKE ALL ON FUNCTION masq.lock_modes_conflict(text, text) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------------------------
-- Bounded waits that no role can lift (SECURITY.md, "Waits")
--
-- The hazard: ingestion, a rotation's switch and a deleter (erase, prune) take turns on two locks (the active
-- pseudonym key's row and the vault epoch, 101_keys_and_vault.sql), and on the rows a deleter deletes. Any login
-- holding masq_ingest may take the first two in a transaction of its own and keep it open; masq_unmask may lock
-- quarantine rows (FOR UPDATE: it may update replayed_at); masq_erase may call a deleting function in a transaction it
-- leaves open. idle_in_transaction_session_timeout (deploy/sql/login-roles.sql) does not end such a session: the
-- session sets it to 0 itself; and a deleter waiting on a row lock would hold the epoch, and with it all ingestion.
--
-- The cure, in three parts:
--   1. A deleter waits at most 2 s for ANY lock once it holds the epoch, not only for the epoch: the timeout is set
--      for the rest of the deleting transaction (set_config(..., true), which outlives this function, unlike a SET
--      clause), so a row lock held by another session makes the deleter roll back and release the epoch within 2 s.
--   2. A waiter that has waited for a lock for 1 s may have the sessions that block it ended
--      (masq.end_lock_blockers): only backends of logins that hold masq_ingest, masq_unmask or masq_erase, never a
--      superuser's, the schema owner's or a member of it, never the caller's own. What was ended rolls back: an
--      ingest batch is redelivered and deduplicated by the ledger (exactly once, as after any lost connection).
--      Only a session of the caller's own login may be waited for, and only the server decides how long it waited
--      (pg_locks.waitstart), so a caller cannot end a session that holds it up for less.
--   3. Ingestion waits for the epoch in turns of 1 s; after 10 s of turns it ends the masq role's sessions that hold
--      the epoch against it (a deleting transaction left open: masq's own hold it for one statement, 2 s of waiting
--      at most, so no turn of 10 s can pass while only they hold it). After 60 s it fails and is retried.
--
-- Ending a backend of another role needs the privileges of pg_signal_backend (a superuser owner has them; for any
-- other, a superuser grants them, as deploy/sql/login-roles.sql says); without them nothing is ended, and the
-- waiter's error names the session and its login.

-- Ends session p_pid if it belongs to a login of a masq role, and says what became of it: 'ended', or why not.
-- Never a superuser's, the schema owner's (or a member of the owner's) or the caller's own session. Owner only: the
-- callers below decide when a session may be ended.
CREATE FUNCTION masq.end_masq_session(p_pid integer) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r record;
    owner oid;
BEGIN
    SELECT a.usename::text AS login, ro.oid, ro.rolsuper INTO r
    FROM pg_stat_activity a LEFT JOIN pg_roles ro ON ro.oid = a.usesysid WHERE a.pid = p_pid;
    SELECT n.nspowner INTO owner FROM pg_namespace n WHERE n.nspname = 'masq';
    IF r.oid IS NULL THEN
        RETURN 'not a login session';
    ELSIF r.rolsuper THEN
        RETURN 'superuser';
    ELSIF pg_has_role(r.oid, owner, 'MEMBER') THEN
        RETURN 'schema owner';
    ELSIF NOT (pg_has_role(r.oid, 'masq_ingest', 'MEMBER') OR pg_has_role(r.oid, 'masq_unmask', 'MEMBER')
               OR pg_has_role(r.oid, 'masq_erase', 'MEMBER')) THEN
        RETURN 'not a masq role';
    ELSIF p_pid = pg_backend_pid() THEN
        RETURN 'the caller';
    END IF;
    BEGIN
        -- Waits (up to 2 s) for the backend to exit, so its locks are gone when this returns.
        IF NOT pg_terminate_backend(p_pid, 2000) THEN
            RETURN 'gone';
        END IF;
    EXCEPTION WHEN insufficient_privilege THEN
        RETURN 'not permitted (pg_signal_backend)';
    END;
    -- In the server's log too: who was ended, for whom.
    RAISE WARNING 'masq ended session % of login %, which held a lock that login % waited for', p_pid, r.login, session_user;
    RETURN 'ended';
END $$;
REVOKE ALL ON FUNCTION masq.end_masq_session(integer) FROM PUBLIC;

-- The sessions that hold up session p_waiter's lock wait, once it has waited 1 s, each with what it holds and
-- whether it was ended. p_waiter must be a session of the caller's login (session_user), waiting for one of masq's
-- locks (the relations masq.vault_epoch, masq.pseudonym_keys, masq.audit_chain; a row of masq.quarantine,
-- masq.vault, masq.pseudonym_keys, masq.audit_chain or a registered table). Only the sessions that HOLD a granted
-- lock that conflicts with it are ended, never the sessions merely queued ahead (pg_blocking_pids lists those too).
--   lock     what the waiter waits for ("relation masq.vault_epoch", "a row of masq.quarantine", ...)
--   outcome  'ended', or why not: 'superuser', 'schema owner', 'not a masq role', 'not permitted (pg_signal_backend)'
CREATE FUNCTION masq.end_lock_blockers(p_waiter integer)
    RETURNS TABLE (pid integer, login text, lock text, waited_ms bigint, outcome text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    min_wait CONSTANT interval := interval '1 second';
    w record;
    b record;
    rel regclass;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = p_waiter AND a.usename = session_user AND a.pid <> pg_backend_pid()) THEN
        RAISE EXCEPTION 'session % is not another session of this login', p_waiter USING ERRCODE = '42501';
    END IF;
    SELECT l.locktype, l.relation, l.mode, l.transactionid, l.waitstart INTO w
    FROM pg_locks l WHERE l.pid = p_waiter AND NOT l.granted LIMIT 1;
    IF NOT FOUND OR w.waitstart IS NULL THEN
        RETURN;
    END IF;
    IF w.locktype = 'relation' THEN
        rel := w.relation;
        IF rel NOT IN ('masq.vault_epoch'::regclass, 'masq.pseudonym_keys'::regclass, 'masq.audit_chain'::regclass) THEN
            RETURN;
        END IF;
        lock := 'relation ' || rel::text;
    ELSIF w.locktype = 'transactionid' THEN
        -- A row lock is waited for as the holder's transaction id; the row's table is that of the tuple lock the
        -- waiter holds.
        SELECT t.relation INTO rel FROM pg_locks t WHERE t.pid = p_waiter AND t.locktype = 'tuple' AND t.granted LIMIT 1;
        IF rel IS NULL OR NOT (rel IN ('masq.quarantine'::regclass, 'masq.vault'::regclass, 'masq.pseudonym_keys'::regclass, 'masq.audit_chain'::regclass)
                               OR EXISTS (SELECT 1 FROM masq.target_tables t WHERE t.relation = rel)) THEN
            RETURN;
        END IF;
        lock := 'a row of ' || rel::text;
    ELSE
        RETURN;
    END IF;
    waited_ms := (extract(epoch FROM clock_timestamp() - w.waitstart) * 1000)::bigint;
    -- Only the sessions that hold what the waiter waits for: a granted lock in a conflicting mode on the relation,
    -- or the transaction that holds the row. Sessions queued ahead hold neither.
    FOR b IN SELECT DISTINCT x.pid AS bpid, a.usename::text AS busename
             FROM unnest(pg_blocking_pids(p_waiter)) AS x(pid) LEFT JOIN pg_stat_activity a ON a.pid = x.pid
             WHERE EXISTS (SELECT 1 FROM pg_locks g WHERE g.pid = x.pid AND g.granted AND (
                      (w.locktype = 'relation' AND g.locktype = 'relation' AND g.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                       AND g.relation = rel AND masq.lock_modes_conflict(w.mode, g.mode))
                   OR (w.locktype = 'transactionid' AND g.locktype = 'transactionid' AND g.transactionid = w.transactionid)))
    LOOP
        pid := b.bpid;
        login := b.busename;
        IF waited_ms < extract(epoch FROM min_wait) * 1000 THEN
            outcome := 'waited less than ' || min_wait::text;
        ELSE
            outcome := masq.end_masq_session(b.bpid);
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION masq.end_lock_blockers(integer) FROM PUBLIC;
