-- The audit is enforced by Postgres, not by the client (SECURITY.md, "Roles" and "The audit trail").
--
-- Before this migration masq_unmask could SELECT the vault and the wrapped data keys directly, so a client that
-- skipped the audit insert read values unrecorded, and it could INSERT audit rows of its own. From here on:
--   * ciphertext (vault values, encrypted quarantine bodies) leaves the database only through SECURITY DEFINER
--     functions, and only for an audit row that has already COMMITTED: the reveal is two transactions, the first
--     writes and seals the audit row, the second hands out the ciphertexts it names. A client that rolls back the
--     first gets nothing; one that rolls back the second is recorded anyway.
--   * every audit row carries a MAC chained over the previous row, under an audit key that only the master key
--     unwraps (masq.audit_keys), so the database alone can neither forge nor silently edit the trail;
--   * who acted is recorded by the server (session_user, and the role set with SET ROLE); what the client adds (OS
--     user, AWS caller) is kept apart, in client_reported;
--   * the ingest role writes keys and vault values only through narrow functions, so it cannot plant rows that
--     stop a rotation (a 'retiring' pseudonym key, a version near the integer limit) or overwrite a stored value.
-- Plain ASCII on purpose: a LATIN1 (or any non-UTF8) database must be able to run it.

-- ---------------------------------------------------------------------------------------------------------------
-- Tables

-- The key behind the audit MACs: 32 bytes, wrapped by the master key (purpose "audit"), created by the first
-- audited action. The database holds it only wrapped, so whoever can edit rows cannot compute a valid MAC.
CREATE TABLE masq.audit_keys (
    version        integer     PRIMARY KEY CHECK (version = 1),
    provider       text        NOT NULL CHECK (provider IN ('kms', 'local')),
    master_key_id  text        NOT NULL,
    wrapped        bytea       NOT NULL,
    fingerprint    text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    rewrapped_at   timestamptz
);

-- The trail. seq has no gaps (assigned under the chain lock, never by a sequence that a rollback would skip), so
-- a removed row shows as a gap, and each row names the MAC of the row before it.
--   mac = HMAC-SHA256(audit key, "masq/audit/v1" || canonical row), computed by the client that holds the key,
--   stored by masq.audit_seal before the transaction may commit, and recomputed by `masq audit verify`.
-- Rows from before this migration (masq.unmask_audit) are kept as they were, without a MAC (key_version NULL):
-- `masq audit verify` reports them as not covered.
CREATE TABLE masq.audit (
    seq              bigint      PRIMARY KEY,
    at               timestamptz NOT NULL,
    action           text        NOT NULL CHECK (action IN ('unmask', 'pseudonym', 'replay', 'rotate-pseudonym-key', 'rotate-master-key')),
    login_role       text        NOT NULL,
    effective_role   text        NOT NULL,
    client_reported  jsonb       NOT NULL DEFAULT '{}',
    reason           text        NOT NULL CHECK (length(btrim(reason)) >= 3),
    selector         jsonb       NOT NULL,
    subjects         text[]      NOT NULL,
    value_count      integer     NOT NULL,
    key_version      integer     REFERENCES masq.audit_keys (version),
    prev_mac         bytea,
    mac              bytea,
    CHECK (key_version IS NOT NULL OR mac IS NULL)
);
CREATE INDEX audit_at_idx ON masq.audit (at);

INSERT INTO masq.audit (seq, at, action, login_role, effective_role, client_reported, reason, selector, subjects, value_count)
SELECT row_number() OVER (ORDER BY id), at, command, login_role, effective_role,
       jsonb_strip_nulls(jsonb_build_object('os_user', os_user, 'aws_identity', aws_identity)),
       reason, selector, pseudonyms, value_count
FROM masq.unmask_audit;

DROP TABLE masq.unmask_audit;

-- The old name, for queries and SIEM exports written against it: the unmask and pseudonym rows of the trail, with
-- pseudonyms as before (subjects are "kind:pseudonym" in masq.audit).
CREATE VIEW masq.unmask_audit AS
SELECT seq AS id, at, action AS command, login_role, effective_role,
       client_reported ->> 'aws_identity' AS aws_identity, client_reported ->> 'os_user' AS os_user,
       reason, selector, ARRAY(SELECT regexp_replace(s, '^(ip|device_id):', '') FROM unnest(subjects) AS s) AS pseudonyms, value_count
FROM masq.audit WHERE action IN ('unmask', 'pseudonym');

-- One row: the lock that serialises appends, so that two audited actions at once chain one after the other.
CREATE TABLE masq.audit_chain (one boolean PRIMARY KEY DEFAULT true CHECK (one));
INSERT INTO masq.audit_chain VALUES (true);

-- Set by a reveal that found a stored value whose pseudonym is not HMAC(key, kind:value): a value planted with the
-- ingest credentials. Ingestion replaces a suspect row when the true value arrives (masq.add_vault_values).
ALTER TABLE masq.vault ADD COLUMN suspect boolean NOT NULL DEFAULT false;

-- Vault values and pseudonyms that a pseudonym key rotation found planted or unreadable (counted, then dropped).
ALTER TABLE masq.pseudonym_rotation ADD COLUMN forged bigint NOT NULL DEFAULT 0;

-- ---------------------------------------------------------------------------------------------------------------
-- The trail cannot be edited in place: sealed rows never change, rows are never deleted. (The owner can drop these
-- triggers; the MAC chain is what makes that visible.)

CREATE FUNCTION masq.audit_immutable() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    -- The one change allowed: sealing, which stores the MAC of a row not sealed yet and changes nothing else.
    IF TG_OP = 'UPDATE' THEN
        IF OLD.mac IS NULL AND OLD.key_version IS NOT NULL AND NEW.mac IS NOT NULL
           AND (OLD.seq, OLD.at, OLD.action, OLD.login_role, OLD.effective_role, OLD.client_reported, OLD.reason, OLD.selector,
                OLD.subjects, OLD.value_count, OLD.key_version, OLD.prev_mac)
               IS NOT DISTINCT FROM
               (NEW.seq, NEW.at, NEW.action, NEW.login_role, NEW.effective_role, NEW.client_reported, NEW.reason, NEW.selector,
                NEW.subjects, NEW.value_count, NEW.key_version, NEW.prev_mac) THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'masq.audit rows are append-only' USING ERRCODE = '42501';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON masq.audit FOR EACH ROW EXECUTE FUNCTION masq.audit_immutable();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON masq.audit FOR EACH STATEMENT EXECUTE FUNCTION masq.audit_immutable();

-- A row must be sealed (its MAC stored) before its transaction commits: checked at commit, so a client cannot
-- leave an unsealed row behind (SET CONSTRAINTS ... IMMEDIATE only makes it fail sooner).
CREATE FUNCTION masq.audit_sealed_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM masq.audit WHERE seq = NEW.seq AND mac IS NULL) THEN
        RAISE EXCEPTION 'audit row % was not sealed before commit', NEW.seq USING ERRCODE = '42501';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER audit_sealed AFTER INSERT ON masq.audit DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION masq.audit_sealed_check();

-- ---------------------------------------------------------------------------------------------------------------
-- Appending to the trail

-- The next row of the trail, unsealed; returns its seq. Owner only: roles append through the functions below,
-- which decide the action and the subjects themselves. Takes the chain lock until the transaction ends.
CREATE FUNCTION masq.audit_append(p_action text, p_reason text, p_selector jsonb, p_client jsonb, p_subjects text[], p_key_version integer)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    head masq.audit%ROWTYPE;
    next_seq bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM masq.audit_keys WHERE version = p_key_version) THEN
        RAISE EXCEPTION 'audit key version % does not exist', p_key_version USING ERRCODE = '22023';
    END IF;
    PERFORM 1 FROM masq.audit_chain FOR UPDATE;
    SELECT * INTO head FROM masq.audit ORDER BY seq DESC LIMIT 1;
    IF FOUND AND head.mac IS NULL AND head.key_version IS NOT NULL THEN
        RAISE EXCEPTION 'audit row % is not sealed yet: seal it before appending another', head.seq USING ERRCODE = '55000';
    END IF;
    next_seq := coalesce(head.seq, 0) + 1;
    INSERT INTO masq.audit (seq, at, action, login_role, effective_role, client_reported, reason, selector, subjects, value_count, key_version, prev_mac)
    VALUES (next_seq, now(), p_action, session_user,
            CASE WHEN current_setting('role') IN ('', 'none') THEN session_user ELSE current_setting('role') END,
            coalesce(p_client, '{}'), btrim(p_reason), coalesce(p_selector, '{}'), coalesce(p_subjects, '{}'),
            coalesce(cardinality(p_subjects), 0), p_key_version, head.mac);
    RETURN next_seq;
END $$;
REVOKE ALL ON FUNCTION masq.audit_append(text, text, jsonb, jsonb, text[], integer) FROM PUBLIC;

-- Stores the MAC of the caller's own unsealed row (rows of other transactions are invisible until they commit,
-- and committed rows are sealed).
CREATE FUNCTION masq.audit_seal(p_seq bigint, p_mac bytea) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF length(p_mac) <> 32 THEN RAISE EXCEPTION 'an audit MAC is 32 bytes' USING ERRCODE = '22023'; END IF;
    UPDATE masq.audit SET mac = p_mac WHERE seq = p_seq AND mac IS NULL AND key_version IS NOT NULL AND login_role = session_user;
    IF NOT FOUND THEN RAISE EXCEPTION 'no unsealed audit row % of this session', p_seq USING ERRCODE = '42501'; END IF;
END $$;
REVOKE ALL ON FUNCTION masq.audit_seal(bigint, bytea) FROM PUBLIC;

-- `masq pseudonym`: the lookup of a pseudonym for a value the operator holds (computed by the client, which has
-- the pseudonym key: this row records that it was asked, see SECURITY.md).
CREATE FUNCTION masq.audit_pseudonym(p_reason text, p_selector jsonb, p_client jsonb, p_subjects text[], p_key_version integer)
    RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT masq.audit_append('pseudonym', p_reason, p_selector, p_client, p_subjects, p_key_version) $$;
REVOKE ALL ON FUNCTION masq.audit_pseudonym(text, jsonb, jsonb, text[], integer) FROM PUBLIC;

-- The audit MAC key, wrapped, for the roles that append or verify; and its creation by the first audited action.
CREATE FUNCTION masq.audit_key() RETURNS TABLE (version integer, provider text, master_key_id text, wrapped bytea, fingerprint text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT version, provider, master_key_id, wrapped, fingerprint FROM masq.audit_keys ORDER BY version DESC LIMIT 1 $$;
REVOKE ALL ON FUNCTION masq.audit_key() FROM PUBLIC;

CREATE FUNCTION masq.create_audit_key(p_provider text, p_master_key_id text, p_wrapped bytea, p_fingerprint text) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    INSERT INTO masq.audit_keys (version, provider, master_key_id, wrapped, fingerprint)
    SELECT 1, p_provider, p_master_key_id, p_wrapped, p_fingerprint
    WHERE length(p_wrapped) <= 4096 AND length(p_master_key_id) <= 2048 AND p_fingerprint ~ '^[0-9a-f]{16}$'
    ON CONFLICT (version) DO NOTHING
$$;
REVOKE ALL ON FUNCTION masq.create_audit_key(text, text, bytea, text) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------------------------
-- Reveals: first the audit row (committed), then the ciphertexts it names.

-- `masq unmask`, step 1: records which of the asked (kind, pseudonym) pairs the vault holds, at most p_limit of
-- them in key order, and returns the unsealed row's seq and whether more matched than the limit.
CREATE FUNCTION masq.audit_reveal_vault(p_reason text, p_selector jsonb, p_client jsonb, p_kinds text[], p_pseudonyms text[], p_limit integer, p_key_version integer)
    RETURNS TABLE (seq bigint, more boolean)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    found_subjects text[];
    found_count integer;
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN RAISE EXCEPTION 'limit must be positive' USING ERRCODE = '22023'; END IF;
    SELECT array_agg(s ORDER BY s), count(*) INTO found_subjects, found_count FROM (
        SELECT DISTINCT v.kind || ':' || v.pseudonym AS s, v.kind, v.pseudonym
        FROM masq.vault v JOIN unnest(p_kinds, p_pseudonyms) AS w(kind, pseudonym) ON v.kind = w.kind AND v.pseudonym = w.pseudonym
        ORDER BY v.kind, v.pseudonym LIMIT p_limit + 1) f;
    more := found_count > p_limit;
    seq := masq.audit_append('unmask', p_reason, p_selector, p_client, coalesce(found_subjects[1:p_limit], '{}'), p_key_version);
    RETURN NEXT;
END $$;
REVOKE ALL ON FUNCTION masq.audit_reveal_vault(text, jsonb, jsonb, text[], text[], integer, integer) FROM PUBLIC;

-- The caller's own audit row of this action, committed and recent: what a step 2 may hand out.
CREATE FUNCTION masq.committed_reveal(p_seq bigint, p_action text) RETURNS text[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r masq.audit%ROWTYPE;
BEGIN
    SELECT * INTO r FROM masq.audit a WHERE a.seq = p_seq;
    -- A row of this very transaction (at = now(), the transaction's start) is not committed yet: step 2 must run
    -- after step 1's COMMIT, or a rollback would undo the record of what was handed out.
    IF NOT FOUND OR r.action <> p_action OR r.login_role <> session_user OR r.mac IS NULL
       OR r.at >= now() OR r.at < now() - interval '10 minutes' THEN
        RAISE EXCEPTION 'audit row % is not a committed, recent % of this login', p_seq, p_action USING ERRCODE = '42501';
    END IF;
    RETURN r.subjects;
END $$;
REVOKE ALL ON FUNCTION masq.committed_reveal(bigint, text) FROM PUBLIC;

-- `masq unmask`, step 2: the ciphertexts that committed audit row names (with the data key and pseudonym key
-- version each needs).
CREATE FUNCTION masq.vault_ciphertexts(p_seq bigint)
    RETURNS TABLE (kind text, pseudonym text, key_version integer, data_key_id uuid, nonce bytea, ciphertext bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT v.kind, v.pseudonym, v.key_version, v.data_key_id, v.nonce, v.ciphertext
    FROM masq.vault v
    WHERE v.kind || ':' || v.pseudonym = ANY (masq.committed_reveal(p_seq, 'unmask'))
    ORDER BY v.kind, v.pseudonym
$$;
REVOKE ALL ON FUNCTION masq.vault_ciphertexts(bigint) FROM PUBLIC;

-- `masq quarantine replay`, step 1: records which of these quarantine records have an encrypted original.
CREATE FUNCTION masq.audit_reveal_bodies(p_reason text, p_selector jsonb, p_client jsonb, p_message_ids text[], p_key_version integer)
    RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT masq.audit_append('replay', p_reason, p_selector, p_client,
        (SELECT coalesce(array_agg(q.message_id ORDER BY q.message_id), '{}') FROM masq.quarantine q
         WHERE q.message_id = ANY (p_message_ids) AND q.body_ciphertext IS NOT NULL),
        p_key_version)
$$;
REVOKE ALL ON FUNCTION masq.audit_reveal_bodies(text, jsonb, jsonb, text[], integer) FROM PUBLIC;

-- `masq quarantine replay`, step 2: the encrypted originals that committed audit row names.
CREATE FUNCTION masq.quarantine_originals(p_seq bigint)
    RETURNS TABLE (message_id text, body_data_key_id uuid, body_nonce bytea, body_ciphertext bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT q.message_id, q.body_data_key_id, q.body_nonce, q.body_ciphertext FROM masq.quarantine q
    WHERE q.message_id = ANY (masq.committed_reveal(p_seq, 'replay')) AND q.body_ciphertext IS NOT NULL
    ORDER BY q.message_id
$$;
REVOKE ALL ON FUNCTION masq.quarantine_originals(bigint) FROM PUBLIC;

-- Wrapped data keys by id. Not audited: a data key opens nothing without a ciphertext, and ciphertexts come only
-- through the audited functions above. Unmask unwraps the keys first, so that a wrong master key is found before
-- any audit row says a value was revealed.
CREATE FUNCTION masq.wrapped_data_keys(p_ids uuid[]) RETURNS TABLE (id uuid, provider text, master_key_id text, wrapped bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT d.id, d.provider, d.master_key_id, d.wrapped FROM masq.data_keys d WHERE d.id = ANY (p_ids) $$;
REVOKE ALL ON FUNCTION masq.wrapped_data_keys(uuid[]) FROM PUBLIC;

-- A reveal found values whose pseudonym does not match them (planted): marks them, so that ingestion replaces
-- them when the true value arrives.
CREATE FUNCTION masq.flag_vault_suspect(p_kinds text[], p_pseudonyms text[]) RETURNS integer
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH f AS (
        UPDATE masq.vault v SET suspect = true FROM unnest(p_kinds, p_pseudonyms) AS w(kind, pseudonym)
        WHERE v.kind = w.kind AND v.pseudonym = w.pseudonym AND NOT v.suspect RETURNING 1)
    SELECT count(*)::int FROM f
$$;
REVOKE ALL ON FUNCTION masq.flag_vault_suspect(text[], text[]) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------------------------
-- What ingestion writes, narrowly

-- The wrapped pseudonym key of a usable version (active or retiring), for the roles that compute pseudonyms.
CREATE FUNCTION masq.pseudonym_key_wrapped(v integer) RETURNS bytea
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT wrapped FROM masq.pseudonym_keys WHERE version = v AND state IN ('active', 'retiring') $$;
REVOKE ALL ON FUNCTION masq.pseudonym_key_wrapped(integer) FROM PUBLIC;

-- The first pseudonym key (version 1, active), on a database that has none: the only pseudonym key ingestion
-- creates. Every later version is made by `masq rotate pseudonym-key`, as the owner.
CREATE FUNCTION masq.create_first_pseudonym_key(p_provider text, p_master_key_id text, p_wrapped bytea, p_fingerprint text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    LOCK TABLE masq.pseudonym_keys IN SHARE ROW EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM masq.pseudonym_keys) THEN RETURN false; END IF;
    IF p_fingerprint !~ '^[0-9a-f]{16}$' OR length(p_wrapped) > 4096 OR length(p_master_key_id) > 2048 THEN
        RAISE EXCEPTION 'not a pseudonym key masq made' USING ERRCODE = '22023';
    END IF;
    INSERT INTO masq.pseudonym_keys (version, state, provider, master_key_id, wrapped, fingerprint)
    VALUES (1, 'active', p_provider, p_master_key_id, p_wrapped, p_fingerprint);
    RETURN true;
END $$;
REVOKE ALL ON FUNCTION masq.create_first_pseudonym_key(text, text, bytea, text) FROM PUBLIC;

-- A new data key. Its provider must be the one every other key of this database uses (a key of another provider
-- would stop `masq rotate master-key`); sizes are bounded. Whether it unwraps only a master key can tell: a key
-- that does not is skipped by the rotation when nothing uses it.
CREATE FUNCTION masq.add_data_key(p_id uuid, p_provider text, p_master_key_id text, p_wrapped bytea) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF length(p_wrapped) > 4096 OR length(p_master_key_id) > 2048 OR p_master_key_id = '' THEN
        RAISE EXCEPTION 'not a data key masq made' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM masq.data_keys WHERE provider <> p_provider)
       OR EXISTS (SELECT 1 FROM masq.pseudonym_keys WHERE provider NOT IN (p_provider, 'external') AND state <> 'retired') THEN
        RAISE EXCEPTION 'this database keys with another provider than %', p_provider USING ERRCODE = '22023';
    END IF;
    INSERT INTO masq.data_keys (id, provider, master_key_id, wrapped) VALUES (p_id, p_provider, p_master_key_id, p_wrapped);
END $$;
REVOKE ALL ON FUNCTION masq.add_data_key(uuid, text, text, bytea) FROM PUBLIC;

-- Vault values under the active pseudonym key, insert-if-absent, except that a row a reveal flagged suspect is
-- replaced by the value ingestion brings now (the MAC check that flagged it showed the stored one was not this
-- pseudonym's value). Returns the rows written. In key order, so that batches sharing values cannot deadlock.
CREATE FUNCTION masq.add_vault_values(p_version integer, p_kinds text[], p_pseudonyms text[], p_data_key_ids uuid[], p_nonces bytea[], p_ciphertexts bytea[])
    RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM masq.pseudonym_keys WHERE version = p_version AND state = 'active') THEN
        RAISE EXCEPTION 'pseudonym key version % is not the active one', p_version USING ERRCODE = '55000';
    END IF;
    WITH w AS (
        INSERT INTO masq.vault AS v (kind, pseudonym, key_version, data_key_id, nonce, ciphertext)
        SELECT DISTINCT ON (i.kind, i.pseudonym) i.kind, i.pseudonym, p_version, i.data_key_id, i.nonce, i.ciphertext
        FROM unnest(p_kinds, p_pseudonyms, p_data_key_ids, p_nonces, p_ciphertexts) AS i(kind, pseudonym, data_key_id, nonce, ciphertext)
        WHERE length(i.ciphertext) <= 65536
        ORDER BY i.kind, i.pseudonym
        ON CONFLICT (kind, pseudonym) DO UPDATE
            SET data_key_id = EXCLUDED.data_key_id, nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext,
                created_at = now(), suspect = false
            WHERE v.suspect AND v.key_version = EXCLUDED.key_version
        RETURNING 1)
    SELECT count(*) INTO n FROM w;
    RETURN n;
END $$;
REVOKE ALL ON FUNCTION masq.add_vault_values(integer, text[], text[], uuid[], bytea[], bytea[]) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------------------------
-- Privileges (SECURITY.md, "Roles", states the same and a test checks each line as a login role)

REVOKE ALL ON masq.vault, masq.data_keys, masq.pseudonym_keys, masq.quarantine FROM masq_unmask;
REVOKE INSERT ON masq.vault, masq.data_keys FROM masq_ingest;
REVOKE ALL ON masq.pseudonym_keys FROM masq_ingest;
REVOKE ALL ON masq.audit, masq.audit_keys, masq.audit_chain, masq.unmask_audit FROM PUBLIC;

-- Non-secret columns, for status and for finding which keys a reveal needs.
GRANT SELECT (kind, pseudonym, key_version, data_key_id, created_at, suspect) ON masq.vault TO masq_ingest, masq_unmask;
GRANT SELECT (id, provider, master_key_id, created_at, rewrapped_at) ON masq.data_keys TO masq_unmask;
GRANT SELECT (version, state, provider, master_key_id, fingerprint, created_at, retired_at, rewrapped_at)
    ON masq.pseudonym_keys TO masq_ingest, masq_unmask;
GRANT SELECT (message_id, reason, detail, body, body_length, sent_at, received_at, quarantined_at, replayed_at, body_data_key_id)
    ON masq.quarantine TO masq_unmask;
GRANT SELECT (version, provider, master_key_id, fingerprint, created_at, rewrapped_at) ON masq.audit_keys TO masq_ingest, masq_unmask;
GRANT SELECT ON masq.pseudonym_rotation TO masq_ingest, masq_unmask;
GRANT SELECT ON masq.audit, masq.unmask_audit TO masq_unmask;

-- `masq quarantine replay` (a login holding both roles: masq_unmask reads the originals, masq_ingest writes as
-- ingestion does): marks records replayed and their ledger outcome written.
GRANT UPDATE (replayed_at) ON masq.quarantine TO masq_unmask;
GRANT SELECT (message_id, outcome), UPDATE (outcome) ON masq.ingest_ledger TO masq_unmask;

GRANT EXECUTE ON FUNCTION masq.pseudonym_key_wrapped(integer) TO masq_ingest, masq_unmask;
GRANT EXECUTE ON FUNCTION masq.create_first_pseudonym_key(text, text, bytea, text) TO masq_ingest;
GRANT EXECUTE ON FUNCTION masq.add_data_key(uuid, text, text, bytea) TO masq_ingest;
GRANT EXECUTE ON FUNCTION masq.add_vault_values(integer, text[], text[], uuid[], bytea[], bytea[]) TO masq_ingest;

GRANT EXECUTE ON FUNCTION masq.audit_key() TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.create_audit_key(text, text, bytea, text) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_seal(bigint, bytea) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_pseudonym(text, jsonb, jsonb, text[], integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_reveal_vault(text, jsonb, jsonb, text[], text[], integer, integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.vault_ciphertexts(bigint) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_reveal_bodies(text, jsonb, jsonb, text[], integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.quarantine_originals(bigint) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.wrapped_data_keys(uuid[]) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.flag_vault_suspect(text[], text[]) TO masq_unmask;
