-- `masq subject erase` (SECURITY.md, "Erasure"), and the vault epoch that makes deleting vault values safe while
-- ingestion runs.
-- Plain ASCII on purpose: a LATIN1 (or any non-UTF8) database must be able to run it.

-- ---------------------------------------------------------------------------------------------------------------
-- 1. The vault epoch
--
-- The hazard: a deletion of vault value P while an ingest transaction that writes a row using P is in flight
-- (invisible to the deletion's snapshot), or while a running masq believes P is in the vault because it committed
-- it earlier (vault-sealer.ts does not seal a value again) and so sends a row without its value. Either leaves a row
-- whose value can never be recovered.
--
-- The cure: one table, one number, one heavyweight lock. Every ingest batch statement locks the table in ROW
-- SHARE mode (masq.lock_vault_epoch, in the same guard as the pseudonym key's lock) and holds it until it commits; a
-- batch that left out values the process believed were in the vault carries the epoch it believed that under, and
-- writes nothing if the epoch moved (StaleVaultError: the process forgets what it knew and seals the batch again,
-- whole). Whatever deletes vault values (erase, prune) first advances the epoch, in the deleting transaction
-- (masq.advance_vault_epoch), under an EXCLUSIVE lock: that waits for every ingest batch in flight to commit, and
-- makes every later one wait for the deletion to commit. Lock requests queue first come, first served: an ingest
-- batch that arrives while a deleter waits queues behind it, so overlapping ingest batches cannot starve a deleter
-- (as share locks on a row did: each new one was granted ahead of the waiting writer). Each deleting statement
-- after it takes a new snapshot (READ COMMITTED; plpgsql takes one per statement of a VOLATILE function), which sees
-- every committed row: a value is deleted only when no row and no quarantine record uses it.
--
-- Neither side waits without bound. A deleter waits at most 2 s for the lock (lock_timeout, on the function) and
-- then tries again later (vault/vault-deletion.ts), letting the ingest batches queued behind it through; an ingest
-- batch waits at most 60 s, then fails and is retried as any transient error is. What holds the lock longer than a
-- statement is a transaction left open by hand (masq's own deleting transactions are one statement, or one
-- statement and the seal of its audit row): deploy/sql/login-roles.sql sets idle_in_transaction_session_timeout on
-- the logins, which ends such a session.
CREATE TABLE masq.vault_epoch (
    one    boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch  bigint  NOT NULL
);
INSERT INTO masq.vault_epoch VALUES (true, 0);

-- Ingestion: the current epoch, the table locked (ROW SHARE: ingest batches do not conflict with each other, nor
-- with autovacuum) until the batch's transaction ends. SECURITY DEFINER because LOCK needs rights on the table that
-- the ingest role must not have.
CREATE FUNCTION masq.lock_vault_epoch() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '60s'
    AS $$
DECLARE
    e bigint;
BEGIN
    LOCK TABLE masq.vault_epoch IN ROW SHARE MODE;
    SELECT epoch INTO e FROM masq.vault_epoch;
    RETURN e;
END $$;
REVOKE ALL ON FUNCTION masq.lock_vault_epoch() FROM PUBLIC;

-- Deleters, first in their transaction: waits (at most 2 s, then SQLSTATE 55P03) for ingest batches in flight, then
-- holds them off until COMMIT. Owner only: called from the SECURITY DEFINER functions that delete (this migration's
-- and retention's).
CREATE FUNCTION masq.advance_vault_epoch() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '2s'
    AS $$
DECLARE
    e bigint;
BEGIN
    LOCK TABLE masq.vault_epoch IN EXCLUSIVE MODE;
    UPDATE masq.vault_epoch SET epoch = epoch + 1 RETURNING epoch INTO e;
    RETURN e;
END $$;
REVOKE ALL ON FUNCTION masq.advance_vault_epoch() FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------------------------
-- 2. Which pseudonyms a quarantine record uses: a redacted copy shows top-level ip and device_id as
--    "hmac:<pseudonym>" (mask/redact-body.ts); a db_rejected record's copy is the masked row itself
--    (commit-batch.ts), whose maskedIp and maskedDeviceId are the bare pseudonyms (a replay loads them). Indexed per
--    kind, so that "does any record still use P" is a lookup; every caller names the kind as a literal, which is
--    what lets the planner use the index.
CREATE FUNCTION masq.redacted_pseudonym(p_body text, p_reason text, p_kind text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v text;
BEGIN
    IF p_body IS NULL OR left(p_body, 1) <> '{' OR p_kind NOT IN ('ip', 'device_id') THEN
        RETURN NULL;
    END IF;
    IF p_reason = 'db_rejected' THEN
        v := p_body::jsonb ->> (CASE p_kind WHEN 'ip' THEN 'maskedIp' ELSE 'maskedDeviceId' END);
        IF v ~ '^[0-9a-f]{64}$' THEN
            RETURN v;
        END IF;
        RETURN NULL;
    END IF;
    v := p_body::jsonb ->> p_kind;
    IF v ~ '^hmac:[0-9a-f]{64}$' THEN
        RETURN substr(v, 6);
    END IF;
    RETURN NULL;
EXCEPTION WHEN invalid_text_representation OR data_exception THEN
    RETURN NULL;
END $$;
CREATE INDEX quarantine_ip_pseudonym_idx ON masq.quarantine (masq.redacted_pseudonym(body, reason, 'ip'));
CREATE INDEX quarantine_device_pseudonym_idx ON masq.quarantine (masq.redacted_pseudonym(body, reason, 'device_id'));

-- ---------------------------------------------------------------------------------------------------------------
-- 3. Erasures in progress
--
-- An erasure is an audit row of intent (action 'subject-erase', phase 'start': who, when, why, the user's keyed
-- fingerprint, the mode), then bounded batches, each its own transaction, then an audit row of what was deleted
-- (phase 'done', the counts the server kept). The batches take the user and the table from the row here, never
-- from the caller, so every deletion belongs to a committed intent row. The user id is kept here only while the
-- erasure runs (it is in the user's table in clear anyway); the 'done' step deletes it. A run that was killed
-- leaves its row: the next run for the same user and table takes its counts over and names it in its own rows. One
-- that nobody resumes is purged a day after its last batch, by the next erasure's start or done step or retention's
-- next batch (masq.purge_erasures): its start row in the trail stays, the user id does not.
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
    touched_at   timestamptz NOT NULL DEFAULT now()   -- its last batch
);
REVOKE ALL ON masq.erasures FROM PUBLIC;

-- The target table is the caller's to name, but only a table masq writes (migration 007, masq.registered_target):
-- these functions run with the owner's rights, and a temporary table or view of the caller's, or any other table
-- with the same columns, would have them delete (or run triggers) as the owner. The erasure keeps the regclass, and
-- each batch checks it again.

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

-- Step 1: the intent row (unsealed: the caller seals it, then commits) and the erasure it starts.
CREATE FUNCTION masq.audit_subject_erase(p_reason text, p_client jsonb, p_fingerprint text, p_table regclass, p_user_id text, p_vault_only boolean, p_key_version integer)
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
    SELECT coalesce(array_agg(e.seq ORDER BY e.seq), '{}') AS seqs, coalesce(sum(e.rows), 0) AS rows,
           coalesce(sum(e.quarantine), 0) AS quarantine, coalesce(sum(e.originals), 0) AS originals, coalesce(sum(e.vault), 0) AS vault
      INTO prev FROM masq.erasures e WHERE e.user_id = p_user_id AND e.target = t;
    PERFORM masq.purge_erasures();
    -- The selector is the server's own, never the caller's: nothing else can be slipped into the trail's row.
    s := masq.audit_append('subject-erase', p_reason,
        jsonb_build_object('command', 'subject erase', 'phase', 'start', 'table', masq.erase_table_name(t), 'vaultOnly', p_vault_only, 'resumes', to_jsonb(prev.seqs)),
        p_client, ARRAY[p_fingerprint], p_key_version);
    DELETE FROM masq.erasures e WHERE e.seq = ANY (prev.seqs);
    INSERT INTO masq.erasures (seq, login_role, target, user_id, vault_only, resumes, rows, quarantine, originals, vault)
    VALUES (s, session_user, t, p_user_id, p_vault_only, prev.seqs, prev.rows, prev.quarantine, prev.originals, prev.vault);
    RETURN s;
END $$;
REVOKE ALL ON FUNCTION masq.audit_subject_erase(text, jsonb, text, regclass, text, boolean, integer) FROM PUBLIC;

-- The query (text, for EXECUTE with $1 = the user id) of the values only this user's rows and records use that are
-- in the vault, as (kind, p): one branch per kind with the kind a literal, so that each NOT EXISTS is a lookup in an
-- index (the table's on masked_ip / masked_device_id, if it has them; the quarantine's expression indexes above).
CREATE FUNCTION masq.erase_private_values(p_table regclass) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $q$ SELECT format(
        'SELECT ''ip'' AS kind, m.p FROM (SELECT masked_ip::text AS p FROM %1$s WHERE user_id = $1 AND masked_ip IS NOT NULL
                                          UNION SELECT masq.redacted_pseudonym(body, reason, ''ip'') FROM masq.quarantine WHERE user_id = $1) m
           JOIN masq.vault v ON v.kind = ''ip'' AND v.pseudonym = m.p
          WHERE NOT EXISTS (SELECT 1 FROM %1$s t WHERE t.masked_ip = m.p AND t.user_id IS DISTINCT FROM $1)
            AND NOT EXISTS (SELECT 1 FROM masq.quarantine q WHERE masq.redacted_pseudonym(q.body, q.reason, ''ip'') = m.p AND q.user_id IS DISTINCT FROM $1)
         UNION ALL
         SELECT ''device_id'', m.p FROM (SELECT masked_device_id::text AS p FROM %1$s WHERE user_id = $1 AND masked_device_id IS NOT NULL
                                         UNION SELECT masq.redacted_pseudonym(body, reason, ''device_id'') FROM masq.quarantine WHERE user_id = $1) m
           JOIN masq.vault v ON v.kind = ''device_id'' AND v.pseudonym = m.p
          WHERE NOT EXISTS (SELECT 1 FROM %1$s t WHERE t.masked_device_id = m.p AND t.user_id IS DISTINCT FROM $1)
            AND NOT EXISTS (SELECT 1 FROM masq.quarantine q WHERE masq.redacted_pseudonym(q.body, q.reason, ''device_id'') = m.p AND q.user_id IS DISTINCT FROM $1)',
        p_table) $q$;
REVOKE ALL ON FUNCTION masq.erase_private_values(regclass) FROM PUBLIC;

-- Step 2, repeated (each call its own transaction): at most p_limit of the user's rows, then of their quarantine
-- records, are deleted, and with them every vault value those used that no remaining row and no remaining quarantine
-- record uses. With vault_only the rows and records stay: up to p_limit vault values that only this user's rows and
-- records use are deleted, and the encrypted originals of the user's quarantine records (the values in clear) are
-- dropped. done when a call found nothing left to do.
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
                RETURNING masq.redacted_pseudonym(q.body, q.reason, 'ip') AS ip, masq.redacted_pseudonym(q.body, q.reason, 'device_id') AS dev),
            c AS (SELECT 'ip' AS kind, ip AS p FROM d WHERE ip IS NOT NULL UNION SELECT 'device_id', dev FROM d WHERE dev IS NOT NULL)
            SELECT (SELECT count(*)::int FROM d), coalesce((SELECT array_agg(kind) FROM c), '{}'), coalesce((SELECT array_agg(p) FROM c), '{}')
              INTO quarantine, qk, qp;
            kinds := kinds || qk;
            pseudonyms := pseudonyms || qp;
        END IF;
        -- A candidate stays while any remaining row (this user's later batches included) or record uses it. IN (subquery),
        -- not = ANY (ARRAY(...)): a semi-join the planner can hash when the table has no index on the column.
        EXECUTE format(
            'WITH c AS (SELECT DISTINCT kind, p FROM unnest($1::text[], $2::text[]) AS c(kind, p)),
                  used AS (SELECT ''ip'' AS kind, masked_ip::text AS p FROM %1$s WHERE masked_ip IN (SELECT p FROM c WHERE kind = ''ip'')
                           UNION SELECT ''device_id'', masked_device_id::text FROM %1$s WHERE masked_device_id IN (SELECT p FROM c WHERE kind = ''device_id'')
                           UNION SELECT ''ip'', masq.redacted_pseudonym(body, reason, ''ip'') FROM masq.quarantine
                                 WHERE masq.redacted_pseudonym(body, reason, ''ip'') IN (SELECT p FROM c WHERE kind = ''ip'')
                           UNION SELECT ''device_id'', masq.redacted_pseudonym(body, reason, ''device_id'') FROM masq.quarantine
                                 WHERE masq.redacted_pseudonym(body, reason, ''device_id'') IN (SELECT p FROM c WHERE kind = ''device_id'')),
                  d AS (DELETE FROM masq.vault v USING c WHERE v.kind = c.kind AND v.pseudonym = c.p
                        AND NOT EXISTS (SELECT 1 FROM used u WHERE u.kind = c.kind AND u.p = c.p) RETURNING 1)
             SELECT count(*)::int FROM d', j.target) INTO vault USING kinds, pseudonyms;
        done := rows = 0 AND quarantine = 0;
    ELSE
        -- Values this user's rows and records use, in the vault, that no other user's row or record uses.
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
-- below).
CREATE FUNCTION masq.erase_subject_preview(p_table regclass, p_user_id text, p_vault_only boolean)
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
                (SELECT count(*) FROM (%2$s) c)', t, masq.erase_private_values(t))
        INTO rows, quarantine, originals, vault USING p_user_id;
    IF NOT p_vault_only THEN originals := 0; ELSE rows := 0; quarantine := 0; END IF;
    RETURN NEXT;
END $$;
REVOKE ALL ON FUNCTION masq.erase_subject_preview(regclass, text, boolean) FROM PUBLIC;

-- --dry-run: the counts, with an audit row (action 'subject-erase', phase 'preview', the user's fingerprint, the
-- counts), unsealed: the caller seals it, then commits. Audited because the counts answer "does this user exist, and
-- how much data do they have" for any id the caller names: the trail shows who asked about whom, as it does for an
-- erasure.
CREATE FUNCTION masq.audit_subject_erase_preview(p_reason text, p_client jsonb, p_fingerprint text, p_table regclass, p_user_id text, p_vault_only boolean, p_key_version integer)
    RETURNS TABLE (seq bigint, rows bigint, quarantine bigint, originals bigint, vault bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t regclass := masq.registered_target(p_table);
    c record;
BEGIN
    PERFORM masq.refuse_during_rotation();
    PERFORM masq.check_erase_subject(p_fingerprint, p_user_id, p_vault_only);
    SELECT * INTO c FROM masq.erase_subject_preview(t, p_user_id, p_vault_only);
    seq := masq.audit_append('subject-erase', p_reason,
        jsonb_build_object('phase', 'preview', 'table', masq.erase_table_name(t), 'vaultOnly', p_vault_only,
                           'rows', c.rows, 'quarantine', c.quarantine, 'originals', c.originals, 'vault', c.vault),
        p_client, ARRAY[p_fingerprint], p_key_version);
    rows := c.rows; quarantine := c.quarantine; originals := c.originals; vault := c.vault;
    RETURN NEXT;
END $$;
REVOKE ALL ON FUNCTION masq.audit_subject_erase_preview(text, jsonb, text, regclass, text, boolean, integer) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------------------------
-- 4. Privileges (SECURITY.md, "Roles")
--
-- masq_erase deletes only through the functions above, each tied to an intent row it committed to the trail; it has
-- no plain DELETE (nor SELECT) on the user's table, the vault or the quarantine, and reads no ciphertext or wrapped
-- key. It holds the audit key (wrapped; with KMS, Decrypt with purpose=audit) to seal its rows.
GRANT EXECUTE ON FUNCTION masq.lock_vault_epoch() TO masq_ingest;
GRANT SELECT ON masq.vault_epoch TO masq_ingest, masq_unmask, masq_erase;

GRANT EXECUTE ON FUNCTION masq.audit_subject_erase(text, jsonb, text, regclass, text, boolean, integer) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.erase_subject_batch(bigint, integer) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.audit_subject_erased(bigint, jsonb, integer) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.audit_subject_erase_preview(text, jsonb, text, regclass, text, boolean, integer) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.audit_key() TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.create_audit_key(text, text, bytea, text) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.audit_seal(bigint, bytea) TO masq_erase;
GRANT SELECT ON masq.audit TO masq_erase;
GRANT SELECT (version, provider, master_key_id, fingerprint, created_at, rewrapped_at) ON masq.audit_keys TO masq_erase;
-- For the first audited action, which makes the audit key under the database's master key (audit/audit-key.ts).
GRANT SELECT (id, provider, master_key_id, created_at, rewrapped_at) ON masq.data_keys TO masq_erase;
GRANT SELECT (version, state, provider, master_key_id, fingerprint, created_at, retired_at, rewrapped_at) ON masq.pseudonym_keys TO masq_erase;
