-- Bounded waits that no role can lift (SECURITY.md, "Waits"). Plain ASCII on purpose (see 005).
--
-- The hazard: ingestion, a rotation's switch and a deleter (erase, prune) take turns on two locks (the active
-- pseudonym key's row, migration 003; the vault epoch, migration 009), and on the rows a deleter deletes. Any login
-- holding masq_ingest may take the first two in a transaction of its own and keep it open; masq_unmask may lock
-- quarantine rows (FOR UPDATE: it may update replayed_at); masq_erase may call a deleting function in a transaction it
-- leaves open. idle_in_transaction_session_timeout (deploy/sql/login-roles.sql) does not end such a session: the
-- session sets it to 0 itself. The waiters gave up after 30 s (a rotation) or 3 minutes (a deleter), and a deleter
-- waiting on a row lock held the epoch, and with it all ingestion, for the whole statement_timeout.
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
--      at most, so no turn of 10 s can pass while only they hold it). After 60 s it fails and is retried, as before.
--
-- Ending a backend of another role needs the privileges of pg_signal_backend (a superuser owner has them; for any
-- other, a superuser grants them, as deploy/sql/login-roles.sql says); without them nothing is ended, and the
-- waiter's error names the session and its login.

CREATE OR REPLACE FUNCTION masq.advance_vault_epoch() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    e bigint;
BEGIN
    -- For the rest of this transaction: every lock the deleter waits for while it holds the epoch, 2 s at most.
    PERFORM set_config('lock_timeout', '2s', true);
    LOCK TABLE masq.vault_epoch IN EXCLUSIVE MODE;
    UPDATE masq.vault_epoch SET epoch = epoch + 1 RETURNING epoch INTO e;
    RETURN e;
END $$;
-- 009's SET lock_timeout clause would be restored at exit and undo the set_config above: it must not stay (CREATE OR
-- REPLACE replaces the clauses already; said again here so that no later change brings it back unnoticed).
ALTER FUNCTION masq.advance_vault_epoch() RESET lock_timeout;
REVOKE ALL ON FUNCTION masq.advance_vault_epoch() FROM PUBLIC;

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

-- Ingestion's share lock on the epoch (migration 009), taken in turns of 1 s. Past 10 s of turns, whatever holds the
-- epoch against it is a transaction left open, not a deleter's batch: the sessions of masq roles among the holders
-- are ended. Past 60 s it fails (lock_not_available) and the batch is retried, as before.
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
                FOR h IN SELECT DISTINCT l.pid FROM pg_locks l
                         WHERE l.locktype = 'relation' AND l.relation = 'masq.vault_epoch'::regclass AND l.granted
                           AND l.mode IN ('ExclusiveLock', 'AccessExclusiveLock') AND l.pid <> pg_backend_pid()
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

-- The sessions that hold up session p_waiter's lock wait, once it has waited 1 s, each with what it holds and
-- whether it was ended. p_waiter must be a session of the caller's login (session_user), waiting for a lock.
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
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = p_waiter AND a.usename = session_user AND a.pid <> pg_backend_pid()) THEN
        RAISE EXCEPTION 'session % is not another session of this login', p_waiter USING ERRCODE = '42501';
    END IF;
    SELECT l.locktype, l.relation, l.waitstart INTO w FROM pg_locks l WHERE l.pid = p_waiter AND NOT l.granted LIMIT 1;
    IF NOT FOUND OR w.waitstart IS NULL THEN
        RETURN;
    END IF;
    waited_ms := (extract(epoch FROM clock_timestamp() - w.waitstart) * 1000)::bigint;
    -- A row lock is waited for as the holder's transaction id; the row's table is that of the tuple lock the waiter holds.
    lock := CASE
        WHEN w.relation IS NOT NULL THEN w.locktype || ' ' || w.relation::regclass::text
        WHEN w.locktype IN ('transactionid', 'virtualxid') THEN coalesce(
            (SELECT 'a row of ' || t.relation::regclass::text FROM pg_locks t WHERE t.pid = p_waiter AND t.locktype = 'tuple' AND t.granted LIMIT 1),
            'a transaction')
        ELSE w.locktype END;
    FOR b IN SELECT x.pid AS bpid, a.usename::text AS busename
             FROM unnest(pg_blocking_pids(p_waiter)) AS x(pid) LEFT JOIN pg_stat_activity a ON a.pid = x.pid
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
