-- The audit trail, enforced by Postgres, not by the client (SECURITY.md, "Roles" and "The audit trail"). Plain
-- ASCII on purpose (see 101_keys_and_vault.sql).
--   * ciphertext (vault values, encrypted quarantine bodies) leaves the database only through SECURITY DEFINER
--     functions, and only for an audit row that has already COMMITTED: the reveal is two transactions, the first
--     writes and seals the audit row, the second hands out the ciphertexts it names. A client that rolls back the
--     first gets nothing; one that rolls back the second is recorded anyway.
--   * every audit row carries a MAC chained over the previous row, under an audit key that only the master key
--     unwraps (masq.audit_keys), so the database alone can neither forge nor silently edit the trail;
--   * who acted is recorded by the server (session_user, and the role set with SET ROLE); what the client adds (OS
--     user, AWS caller) is kept apart, in client_reported.

-- ---------------------------------------------------------------------------------------------------------------
-- Tables

-- The key behind the audit MACs: 32 bytes, wrapped by the master key (purpose "audit"). The database holds it only
-- wrapped, so whoever can edit rows cannot compute a valid MAC. It is made only by the owner (`masq migrate` with the
-- master key configured, or the owner's first audited action), after the creator unwrapped it (audit/audit-key.ts):
-- the database cannot tell whether a wrapped key unwraps, so it trusts no other creator (a key that does not unwrap
-- would stop every audited command). chain_start is the seq of the first row sealed under the key, made in the same
-- transaction as the key (its own 'audit-key' row): every row from there on must carry a valid MAC; only rows before
-- it may lack one. The row at chain_start is the one sealed row whose prev_mac is NULL, so moving the marker anywhere
-- else (later, earlier, past the end) makes `masq audit verify` fail.
CREATE TABLE masq.audit_keys (
    version        integer     PRIMARY KEY CHECK (version = 1),
    provider       text        NOT NULL CHECK (provider IN ('kms', 'local')),
    master_key_id  text        NOT NULL,
    wrapped        bytea       NOT NULL,
    fingerprint    text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    rewrapped_at   timestamptz,
    chain_start    bigint      NOT NULL
);

-- The trail. seq has no gaps (assigned under the chain lock, never by a sequence that a rollback would skip), so
-- a removed row shows as a gap, and each row names the MAC of the row before it.
--   mac = HMAC-SHA256(audit key, "masq/audit/v1" || canonical row), computed by the client that holds the key,
--   stored by masq.audit_seal before the transaction may commit, and recomputed by `masq audit verify`.
-- Rows from before the chain (the unmask audit of the first versions of masq) are kept as they were, without a MAC
-- (key_version NULL): `masq audit verify` reports them as not covered.
CREATE TABLE masq.audit (
    seq              bigint      PRIMARY KEY,
    at               timestamptz NOT NULL,
    action           text        NOT NULL CHECK (action IN (
        'unmask', 'pseudonym', 'replay', 'rotate-pseudonym-key', 'rotate-master-key',
        'subject-export', 'subject-erase', 'vault-prune', 'quarantine-original', 'audit-key', 'vault-suspect')),
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

-- The name the first versions of masq used, for queries and SIEM exports written against it: the unmask and
-- pseudonym rows of the trail, with pseudonyms as before (subjects are "kind:pseudonym" in masq.audit).
CREATE VIEW masq.unmask_audit AS
SELECT seq AS id, at, action AS command, login_role, effective_role,
       client_reported ->> 'aws_identity' AS aws_identity, client_reported ->> 'os_user' AS os_user,
       reason, selector, ARRAY(SELECT regexp_replace(s, '^(ip|device_id):', '') FROM unnest(subjects) AS s) AS pseudonyms, value_count
FROM masq.audit WHERE action IN ('unmask', 'pseudonym');

-- `masq subject export` and audited quarantine originals (`masq quarantine show --original`, `quarantine replay
-- --body-file`), on the two-transaction reveal below: step 1 appends a sealed audit row and commits, step
-- 2 hands out only what that committed, recent row of this login covers.
--
-- An export row names the user by the fingerprint the client computes with the audit key (src/lifecycle/
-- audit-key.ts): the trail never holds the user id. The database cannot check a fingerprint (it has no
-- key), so step 2 is bound to the user id itself: step 1 keeps sha256(seq:user id) in masq.subject_export_grants,
-- which no role but the owner reads, and step 2 serves the rows of the user id that matches it, nothing else. The
-- counts in the row (rows, values, quarantined) are the server's, not the client's. A grant is useful for the ten
-- minutes that masq.committed_reveal allows; every step 1 first deletes the ones older than that (so the grant of
-- the last export stays until the next one starts).
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

-- One row: the lock that serialises appends, so that two audited actions at once chain one after the other.
CREATE TABLE masq.audit_chain (one boolean PRIMARY KEY DEFAULT true CHECK (one));
INSERT INTO masq.audit_chain VALUES (true);

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

-- The chain lock (masq.audit_chain FOR UPDATE, taken by every audited function) until the transaction ends, waited
-- for in turns of 1 s, 10 s at most. masq's own holders hold it for one append, one seal and a commit (milliseconds):
-- a session of a masq role that has held it against the waiter for 2 s is a transaction left open, and is ended
-- (masq.end_masq_session). Past 10 s the wait fails (lock_not_available) naming the sessions that hold it. Owner only.
CREATE FUNCTION masq.lock_audit_chain() RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s'
    AS $$
DECLARE
    started timestamptz := clock_timestamp();
    h record;
    held text;
BEGIN
    LOOP
        BEGIN
            PERFORM 1 FROM masq.audit_chain FOR UPDATE;
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            held := NULL;
            FOR h IN SELECT * FROM masq.audit_chain_holders() LOOP
                held := coalesce(held || ', ', '') || format('session %s of login %s (%s', h.pid, coalesce(h.login, '(unknown)'), coalesce(h.state, 'unknown'));
                IF clock_timestamp() - started >= interval '2 seconds' THEN
                    held := held || ', ' || masq.end_masq_session(h.pid);
                END IF;
                held := held || ')';
            END LOOP;
            IF clock_timestamp() - started >= interval '10 seconds' THEN
                RAISE EXCEPTION 'the audit trail''s chain lock (masq.audit_chain) is held by %', coalesce(held, 'a session that is gone')
                    USING ERRCODE = '55P03',
                          HINT = 'masq ends only sessions of masq roles (SECURITY.md, "Waits"): end it (pg_terminate_backend) or let it finish, and run this again';
            END IF;
        END;
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION masq.lock_audit_chain() FROM PUBLIC;

-- The sessions that hold the chain lock, with their login and state. The row's locker is not told by its xmax (a
-- transaction id that may be a subtransaction's, and masq.lock_audit_chain locks in one): a session that locked the
-- row holds a row-level lock on the relation and waits for nothing, whereas one waiting for the row holds that lock
-- only while it waits (its attempt's subtransaction aborts after each turn). pg_stat_activity is a snapshot taken
-- once per transaction: cleared, so that each turn sees the sessions' states as they are.
CREATE FUNCTION masq.audit_chain_holders() RETURNS TABLE (pid integer, login text, state text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM pg_stat_clear_snapshot();
    RETURN QUERY
    SELECT DISTINCT l.pid, a.usename::text, a.state
    FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'relation' AND l.relation = 'masq.audit_chain'::regclass AND l.granted
      AND l.mode IN ('RowShareLock', 'RowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock') AND l.pid <> pg_backend_pid()
      AND NOT EXISTS (SELECT 1 FROM pg_locks u WHERE u.pid = l.pid AND NOT u.granted AND u.locktype IN ('transactionid', 'tuple'));
END $$;
REVOKE ALL ON FUNCTION masq.audit_chain_holders() FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------------------------
-- Appending to the trail

-- The next row of the trail, unsealed; returns its seq. Owner only: roles append through the functions below,
-- which decide the action and the subjects themselves. Takes the chain lock until the transaction ends
-- (masq.lock_audit_chain). An audit row's time is taken once the chain lock is held (clock_timestamp(), not the
-- transaction's start), so that times follow seq: an unmask that waited for another one's commit is recorded after
-- it, not before.
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
    PERFORM masq.lock_audit_chain();
    SELECT * INTO head FROM masq.audit ORDER BY seq DESC LIMIT 1;
    IF FOUND AND head.mac IS NULL AND head.key_version IS NOT NULL THEN
        RAISE EXCEPTION 'audit row % is not sealed yet: seal it before appending another', head.seq USING ERRCODE = '55000';
    END IF;
    next_seq := coalesce(head.seq, 0) + 1;
    INSERT INTO masq.audit (seq, at, action, login_role, effective_role, client_reported, reason, selector, subjects, value_count, key_version, prev_mac)
    VALUES (next_seq, greatest(clock_timestamp(), head.at), p_action, session_user,
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

-- The audit MAC key, wrapped, for the roles that append or verify; and its creation by the first audited action.
CREATE FUNCTION masq.audit_key() RETURNS TABLE (version integer, provider text, master_key_id text, wrapped bytea, fingerprint text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT version, provider, master_key_id, wrapped, fingerprint FROM masq.audit_keys ORDER BY version DESC LIMIT 1 $$;
REVOKE ALL ON FUNCTION masq.audit_key() FROM PUBLIC;

-- The audit key and its first row ('audit-key', at chain_start), in one transaction; NULL when a key exists. Owner
-- only (see masq.audit_keys).
CREATE FUNCTION masq.create_audit_key(p_provider text, p_master_key_id text, p_wrapped bytea, p_fingerprint text, p_client jsonb) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    start bigint;
    s bigint;
BEGIN
    IF p_provider IS NULL OR p_provider NOT IN ('kms', 'local') OR length(p_wrapped) > 4096 OR length(p_master_key_id) > 2048
       OR p_master_key_id = '' OR p_fingerprint IS NULL OR p_fingerprint !~ '^[0-9a-f]{16}$' THEN
        RAISE EXCEPTION 'not an audit key masq made' USING ERRCODE = '22023';
    END IF;
    -- The chain lock: no row is appended between reading the head and the key's first row.
    PERFORM masq.lock_audit_chain();
    IF EXISTS (SELECT 1 FROM masq.audit_keys) THEN
        RETURN NULL;
    END IF;
    start := coalesce((SELECT max(a.seq) FROM masq.audit a), 0) + 1;
    INSERT INTO masq.audit_keys (version, provider, master_key_id, wrapped, fingerprint, chain_start)
    VALUES (1, p_provider, p_master_key_id, p_wrapped, p_fingerprint, start);
    s := masq.audit_append('audit-key', 'audit key created',
        jsonb_build_object('event', 'created', 'version', 1, 'provider', p_provider, 'masterKeyId', p_master_key_id,
                           'fingerprint', p_fingerprint, 'chainStart', start),
        p_client, ARRAY['audit-key:v1'], 1);
    IF s <> start THEN
        RAISE EXCEPTION 'the audit key''s first row is % but the chain begins at %', s, start USING ERRCODE = '55000';
    END IF;
    RETURN s;
END $$;
REVOKE ALL ON FUNCTION masq.create_audit_key(text, text, bytea, text, jsonb) FROM PUBLIC;

-- `masq pseudonym`: the lookup of a pseudonym for a value the operator holds (computed by the client, which has
-- the pseudonym key: this row records that it was asked, see SECURITY.md).
CREATE FUNCTION masq.audit_pseudonym(p_reason text, p_selector jsonb, p_client jsonb, p_subjects text[], p_key_version integer)
    RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT masq.audit_append('pseudonym', p_reason, p_selector, p_client, p_subjects, p_key_version) $$;
REVOKE ALL ON FUNCTION masq.audit_pseudonym(text, jsonb, jsonb, text[], integer) FROM PUBLIC;

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

-- `masq unmask`, step 2: the ciphertexts the committed row names, one primary-key lookup per subject.
CREATE FUNCTION masq.vault_ciphertexts(p_seq bigint)
    RETURNS TABLE (kind text, pseudonym text, key_version integer, data_key_id uuid, nonce bytea, ciphertext bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT v.kind, v.pseudonym, v.key_version, v.data_key_id, v.nonce, v.ciphertext
    FROM unnest(masq.committed_reveal(p_seq, 'unmask')) AS s(subject)
    JOIN masq.vault v ON v.kind = split_part(s.subject, ':', 1) AND v.pseudonym = substr(s.subject, strpos(s.subject, ':') + 1)
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

-- The same shape for the encrypted originals: one primary-key lookup per message id named by the audit row.
CREATE FUNCTION masq.quarantine_originals(p_seq bigint)
    RETURNS TABLE (message_id text, body_data_key_id uuid, body_nonce bytea, body_ciphertext bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT q.message_id, q.body_data_key_id, q.body_nonce, q.body_ciphertext
    FROM unnest(masq.committed_reveal(p_seq, 'replay')) AS s(message_id)
    JOIN masq.quarantine q ON q.message_id = s.message_id
    WHERE q.body_ciphertext IS NOT NULL
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

-- The (kind, pseudonym) pairs a committed, recent reveal of this login handed out: an unmask's subjects, or the values
-- of the rows a subject export served (the user id is checked against the export's grant).
CREATE FUNCTION masq.revealed_values(p_reveal bigint, p_user_id text) RETURNS TABLE (kind text, pseudonym text)
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
    RETURN QUERY EXECUTE format(
        'SELECT ''ip''::text, t.masked_ip::text FROM %1$s t WHERE t.user_id = $1 AND t.masked_ip IS NOT NULL
           AND ($2::date IS NULL OR t.create_date >= $2) AND ($3::date IS NULL OR t.create_date <= $3)
         UNION
         SELECT ''device_id''::text, t.masked_device_id::text FROM %1$s t WHERE t.user_id = $1 AND t.masked_device_id IS NOT NULL
           AND ($2::date IS NULL OR t.create_date >= $2) AND ($3::date IS NULL OR t.create_date <= $3)', g.target)
        USING p_user_id, g.from_date, g.to_date;
END $$;
REVOKE ALL ON FUNCTION masq.revealed_values(bigint, text) FROM PUBLIC;

-- A reveal (p_reveal: the login's own committed unmask row, or subject export row with p_user_id) found values whose
-- pseudonym is not HMAC(key, kind:value): appends a 'vault-suspect' row naming those of them the reveal handed out
-- and still stored unflagged, and flags them with it, so that ingestion replaces them when the true value arrives.
-- Returns the row's seq, unsealed (the caller seals it before COMMIT), or NULL when there was nothing to flag.
-- The database cannot decrypt, so it cannot see the mismatch itself: what it enforces is that every flag is sealed
-- in the trail by a holder of the audit key, next to the reveal it names.
CREATE FUNCTION masq.flag_vault_suspect(p_reveal bigint, p_user_id text, p_kinds text[], p_pseudonyms text[], p_key_version integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    flagged text[];
    s bigint;
BEGIN
    SELECT array_agg(v.kind || ':' || v.pseudonym ORDER BY v.kind, v.pseudonym) INTO flagged
    FROM masq.vault v
    JOIN (SELECT DISTINCT w.kind, w.pseudonym FROM unnest(p_kinds, p_pseudonyms) AS w(kind, pseudonym)) w
      ON v.kind = w.kind AND v.pseudonym = w.pseudonym
    JOIN masq.revealed_values(p_reveal, p_user_id) r ON r.kind = w.kind AND r.pseudonym = w.pseudonym
    WHERE NOT v.suspect;
    IF flagged IS NULL THEN
        RETURN NULL;
    END IF;
    s := masq.audit_append('vault-suspect', 'a reveal found stored values that are not their pseudonym''s',
        jsonb_build_object('event', 'flagged', 'reveal', p_reveal), '{}', flagged, p_key_version);
    UPDATE masq.vault v SET suspect = true, suspect_seq = s
    FROM unnest(flagged) AS f(subject)
    WHERE v.kind = split_part(f.subject, ':', 1) AND v.pseudonym = substr(f.subject, strpos(f.subject, ':') + 1);
    RETURN s;
END $$;
REVOKE ALL ON FUNCTION masq.flag_vault_suspect(bigint, text, text[], text[], integer) FROM PUBLIC;
