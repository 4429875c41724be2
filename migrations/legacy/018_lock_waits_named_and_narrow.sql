-- Bounded waits, continued (issue 17, findings 5 and 7 again; SECURITY.md, "Waits"). Plain ASCII on purpose (see 005).
--
--   1. The audit trail's chain lock (masq.audit_chain FOR UPDATE, taken by every audited function) is waited for in
--      turns of 1 s, 10 s at most. masq's own holders hold it for one append, one seal and a commit (milliseconds):
--      a session of a masq role that has held it against the waiter for 2 s is a transaction left open, and is ended
--      (masq.end_masq_session). Past 10 s the wait fails (lock_not_available) naming the sessions that hold it.
--   2. masq.end_lock_blockers acts only on a waiter that waits for one of masq's locks (the relations
--      masq.vault_epoch, masq.pseudonym_keys, masq.audit_chain; a row of masq.quarantine, masq.vault,
--      masq.pseudonym_keys, masq.audit_chain or a registered table), and ends only the sessions that HOLD a granted
--      lock that conflicts with it, never the sessions merely queued ahead (pg_blocking_pids lists those too).
--   3. Ingestion's masq.lock_vault_epoch ends only holders that are idle in a transaction: a deleter still running
--      its statement is waited for (its statement has a time limit of its own, src/vault/vault-deletion.ts).

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

-- Takes the chain lock until the transaction ends, in turns of 1 s (see 1. above). Owner only.
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

-- 006's audit_append with the chain lock taken by masq.lock_audit_chain (nothing else changed).
CREATE OR REPLACE FUNCTION masq.audit_append(p_action text, p_reason text, p_selector jsonb, p_client jsonb, p_subjects text[], p_key_version integer)
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

-- See 3. above: a holder still running its statement (state 'active') is waited for, up to the 60 s as before.
CREATE OR REPLACE FUNCTION masq.lock_vault_epoch() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s'
    AS $$
DECLARE
    e bigint;
    started timestamptz := clock_timestamp();
    h integer;
BEGIN
    LOOP
        BEGIN
            LOCK TABLE masq.vault_epoch IN ROW SHARE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            IF clock_timestamp() - started >= interval '60 seconds' THEN
                RAISE;
            END IF;
            IF clock_timestamp() - started >= interval '10 seconds' THEN
                -- ROW SHARE conflicts with EXCLUSIVE and ACCESS EXCLUSIVE only.
                -- pg_stat_activity is a snapshot taken once per transaction: cleared, to see the states as they are.
                PERFORM pg_stat_clear_snapshot();
                FOR h IN SELECT DISTINCT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                         WHERE l.locktype = 'relation' AND l.relation = 'masq.vault_epoch'::regclass AND l.granted
                           AND l.mode IN ('ExclusiveLock', 'AccessExclusiveLock') AND l.pid <> pg_backend_pid()
                           AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')
                LOOP
                    PERFORM masq.end_masq_session(h);
                END LOOP;
            END IF;
        END;
    END LOOP;
    SELECT epoch INTO e FROM masq.vault_epoch;
    RETURN e;
END $$;
REVOKE ALL ON FUNCTION masq.lock_vault_epoch() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION masq.lock_vault_epoch() TO masq_ingest;

-- 013's end_lock_blockers, narrowed (see 2. above); its result columns as before.
CREATE OR REPLACE FUNCTION masq.end_lock_blockers(p_waiter integer)
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
GRANT EXECUTE ON FUNCTION masq.end_lock_blockers(integer) TO masq_erase;

-- create_audit_key (012) takes the chain lock itself: the same bounded wait.
DO $$
BEGIN
    EXECUTE replace(pg_get_functiondef('masq.create_audit_key(text, text, bytea, text, jsonb)'::regprocedure),
                    'PERFORM 1 FROM masq.audit_chain FOR UPDATE;', 'PERFORM masq.lock_audit_chain();');
END $$;
