-- Ingestion: the ledger that makes a batch exactly-once, the quarantine, and the target tables masq writes.
-- masq's own state lives in schema masq; the user's table is only ever written as given. Plain ASCII on purpose (see
-- 101_keys_and_vault.sql).

-- ---------------------------------------------------------------------------------------------------------------
-- The ingest ledger

-- One row per SQS message id that has been committed, whatever its outcome. Claimed in the same statement as the rows
-- themselves (src/ingest/write-batch.ts), so a redelivered message finds its id here and adds nothing a second time.
--
-- Partitioned by sent_day, the UTC day of the message's SQS SentTimestamp: every redelivery of a message repeats its
-- SentTimestamp, so every delivery claims the same (message_id, sent_day), and the primary key makes the claim
-- exactly-once within one partition. A day's partition is dropped whole once the queue's retention has passed since
-- the day ended (masq.prune_ledger): no message of that day can be delivered again. A message that came without a
-- SentTimestamp (never on AWS) is claimed under sent_day '-infinity', in ingest_ledger_undated, as are ids claimed
-- before the ledger was partitioned (their day is unknown): the claim also looks there (NOT EXISTS), and that
-- partition is pruned by committed_at. A day that has no partition yet goes to ingest_ledger_default, so an insert
-- never fails; masq.ensure_ledger_partitions creates days ahead (at migrate, and from `masq run` at start and hourly)
-- and moves any rows of a day it creates out of the default partition.
CREATE TABLE masq.ingest_ledger (
    message_id    text        NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('written', 'quarantined')),
    committed_at  timestamptz NOT NULL DEFAULT now(),
    sent_day      date        NOT NULL DEFAULT '-infinity',  -- no known day: see above
    PRIMARY KEY (message_id, sent_day)
) PARTITION BY RANGE (sent_day);
-- `masq status`: what was committed today, and when last.
CREATE INDEX ingest_ledger_committed_at_idx ON masq.ingest_ledger (committed_at);
CREATE TABLE masq.ingest_ledger_undated PARTITION OF masq.ingest_ledger FOR VALUES FROM (MINVALUE) TO ('1970-01-01');
CREATE TABLE masq.ingest_ledger_default PARTITION OF masq.ingest_ledger DEFAULT;

-- ---------------------------------------------------------------------------------------------------------------
-- The quarantine

-- Messages masq will not load, with a stable reason code. body is the parsed JSON with every ip and device_id value
-- replaced by its pseudonym ("hmac:<hex>"); it is NULL when the body was not JSON (it cannot be redacted safely).
-- `masq quarantine replay` loads a quarantined message after all (a corrected body, or a db_rejected row once the
-- table accepts it); the record stays, marked with when it was replayed (replayed_at), so the history is kept.
-- The original body is kept encrypted like a vault value (bound to the message id), so that any quarantined message
-- can be replayed once masq or the producer is fixed; body stays the redacted copy people read.
-- Who a record is about (user_id) and which pseudonyms it holds (masked_ip, masked_device_id: those of its
-- top-level ip and device_id, the values its copy shows as "hmac:<pseudonym>", or a db_rejected record's masked
-- row's) are written by ingestion as typed columns, from what its parser parsed (mask/quarantine-facts.ts), and
-- rewritten by a pseudonym key rotation with the copy.
CREATE TABLE masq.quarantine (
    message_id        text        PRIMARY KEY,
    reason            text        NOT NULL,
    detail            text        NOT NULL,
    body              text,
    body_length       integer     NOT NULL,
    sent_at           timestamptz,
    received_at       timestamptz NOT NULL,
    quarantined_at    timestamptz NOT NULL DEFAULT now(),
    replayed_at       timestamptz,
    body_data_key_id  uuid        REFERENCES masq.data_keys (id),
    body_nonce        bytea,
    body_ciphertext   bytea,
    user_id           text,
    masked_ip         text        CHECK (masked_ip ~ '^[0-9a-f]{64}$'),
    masked_device_id  text        CHECK (masked_device_id ~ '^[0-9a-f]{64}$')
);
CREATE INDEX quarantine_reason_idx ON masq.quarantine (reason, quarantined_at);
CREATE INDEX quarantine_pending_idx ON masq.quarantine (quarantined_at) WHERE replayed_at IS NULL;
CREATE INDEX quarantine_user_id_idx ON masq.quarantine (user_id) WHERE user_id IS NOT NULL;
-- "Does any record still use P" is a lookup per kind.
CREATE INDEX quarantine_masked_ip_idx ON masq.quarantine (masked_ip) WHERE masked_ip IS NOT NULL;
CREATE INDEX quarantine_masked_device_id_idx ON masq.quarantine (masked_device_id) WHERE masked_device_id IS NOT NULL;

-- ---------------------------------------------------------------------------------------------------------------
-- The target tables

-- The tables masq writes, registered by `masq migrate` (the owner) when it checks or creates one. The lifecycle
-- functions run with the owner's rights, so they act only on a registered, ordinary, persistent table of the owner
-- (masq.check_target_registration, below): never on a name a caller passes for a temporary table or a view of their
-- own, whose triggers or functions would then run as the owner.
CREATE TABLE masq.target_tables (
    relation      regclass    PRIMARY KEY,
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------------------------
-- Functions

-- The inverse of masq's app_version encoding (MAJOR*1000000 + MINOR*1000 + PATCH): 2003000 -> '2.3.0'.
CREATE FUNCTION masq.app_version_text(v integer) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT (v / 1000000)::text || '.' || (v / 1000 % 1000)::text || '.' || (v % 1000)::text $$;

-- masq acts only on tables whose code cannot run with the owner's rights. Erasure, export, retention, the usage
-- check and the rotation read, delete or rewrite a registered table as the owner of schema masq (SECURITY DEFINER
-- functions, or the owner's own login): a trigger, a rule or a row-level security policy of that table would run
-- with those rights, and the owner is often a superuser. So a table masq acts on (and every table that inherits from
-- it or is a partition of it, whose rows the same statements reach) must be owned by the owner of schema masq (only
-- it, a member of it or a superuser can then add code to it) and have no user trigger, no rule and no row-level
-- security. Checked when a table is registered (masq.target_tables' trigger, and `masq migrate`, which says it in one
-- line) and again every time a definer function resolves a registered table (masq.registered_target,
-- masq.target_relations): a registration made before masq refused such tables, or a table changed since, is refused
-- there with the same line, and nothing is read, deleted or rewritten until it is fixed or unregistered.
--
-- Why masq will not act on p_table, in one line that says what to do; NULL when it may. Invoker's rights: it reads
-- the catalogs only.
CREATE FUNCTION masq.target_refusal(p_table regclass) RETURNS text
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
        FROM tree JOIN pg_class c ON c.oid = tree.rel
    )
    SELECT line FROM why WHERE line IS NOT NULL ORDER BY oid = p_table::oid DESC, oid LIMIT 1
$$;
REVOKE ALL ON FUNCTION masq.target_refusal(regclass) FROM PUBLIC;

-- The registration refuses such a table (the owner inserts the row; `masq migrate` checks first to say it in one
-- line, this is for a registration by plain SQL).
CREATE FUNCTION masq.check_target_registration() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    why text := masq.target_refusal(NEW.relation);
BEGIN
    IF why IS NOT NULL THEN
        RAISE EXCEPTION '%', why USING ERRCODE = '55000';
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION masq.check_target_registration() FROM PUBLIC;

CREATE TRIGGER target_tables_of_the_owner BEFORE INSERT OR UPDATE ON masq.target_tables
    FOR EACH ROW EXECUTE FUNCTION masq.check_target_registration();

-- The table, if masq may act on it: registered, an ordinary persistent table, and not refused by
-- masq.target_refusal. Each time a definer function resolves a table.
CREATE FUNCTION masq.registered_target(p_table regclass) RETURNS regclass
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    why text;
BEGIN
    IF p_table IS NULL OR NOT EXISTS (
        SELECT 1 FROM masq.target_tables t JOIN pg_class c ON c.oid = t.relation
        WHERE t.relation = p_table AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p') THEN
        RAISE EXCEPTION 'table % is not a table masq writes (run masq migrate as the owner with MASQ_TABLE set to it)', p_table
            USING ERRCODE = '42501';
    END IF;
    why := masq.target_refusal(p_table);
    IF why IS NOT NULL THEN
        RAISE EXCEPTION '%', why USING ERRCODE = '55000';
    END IF;
    RETURN p_table;
END $$;
REVOKE ALL ON FUNCTION masq.registered_target(regclass) FROM PUBLIC;

-- Every registered table, for the usage check (masq.values_in_use reads each), erasure and export of every table and
-- the rotation: one that fails the check stops them all with its line. Skipping it instead would let an erasure or
-- prune destroy vault values that table's rows still use.
CREATE FUNCTION masq.target_relations() RETURNS SETOF regclass
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    r regclass;
    why text;
BEGIN
    FOR r IN SELECT t.relation FROM masq.target_tables t JOIN pg_class c ON c.oid = t.relation
             WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' ORDER BY t.relation::oid LOOP
        why := masq.target_refusal(r);
        IF why IS NOT NULL THEN
            RAISE EXCEPTION '%', why USING ERRCODE = '55000';
        END IF;
        RETURN NEXT r;
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION masq.target_relations() FROM PUBLIC;

-- The tables a subject may have rows in: `masq subject erase` and `subject export` act on every registered table
-- unless the command names one (--table or MASQ_TABLE). Their names only; each function checks the table again
-- before it reads or deletes. readable: whether the login may read the table itself (what an export of it requires).
CREATE FUNCTION masq.registered_tables() RETURNS TABLE (schema_name text, table_name text, readable boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT n.nspname::text, c.relname::text, has_table_privilege(session_user, r, 'SELECT') FROM masq.target_relations() AS r
    JOIN pg_class c ON c.oid = r JOIN pg_namespace n ON n.oid = c.relnamespace
$$;
REVOKE ALL ON FUNCTION masq.registered_tables() FROM PUBLIC;

-- The table as the audit row names it: schema-qualified whatever the search_path.
CREATE FUNCTION masq.qualified_name(p_table regclass) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_table
$$;
REVOKE ALL ON FUNCTION masq.qualified_name(regclass) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------------------------
-- The ledger's partitions

-- Creates the day partitions of the ledger from p_from to p_to (UTC days) that do not exist yet; returns how many it
-- created. Cheap when they exist (a catalog lookup per day), so `masq run` calls it at start and hourly, never per
-- batch. A day created after some of its messages went to the default partition takes those rows with it, under a
-- lock that keeps new ones out until the partition is attached: a redelivery then still meets its claim. ATTACH
-- (rather than CREATE TABLE ... PARTITION OF) takes only a SHARE UPDATE EXCLUSIVE lock on the ledger, so batches in
-- flight go on. Definer: the ingest role may not create tables.
CREATE FUNCTION masq.ensure_ledger_partitions(p_from date, p_to date) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s'
    AS $$
DECLARE
    d date;
    part text;
    made integer := 0;
BEGIN
    IF p_to - p_from > 62 THEN
        RAISE EXCEPTION 'at most 62 days of ledger partitions at once' USING ERRCODE = '22023';
    END IF;
    FOR d IN SELECT g::date FROM generate_series(p_from, p_to, interval '1 day') AS g LOOP
        part := 'ingest_ledger_' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass('masq.' || part) IS NOT NULL;
        -- One creator at a time; the loser finds the partition made.
        PERFORM pg_advisory_xact_lock(hashtext('masq.ingest_ledger partitions'));
        CONTINUE WHEN to_regclass('masq.' || part) IS NOT NULL;
        EXECUTE format('CREATE TABLE masq.%I (LIKE masq.ingest_ledger INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        LOCK TABLE masq.ingest_ledger_default IN EXCLUSIVE MODE;
        EXECUTE format('WITH moved AS (DELETE FROM masq.ingest_ledger_default WHERE sent_day = $1 RETURNING *) INSERT INTO masq.%I SELECT * FROM moved', part)
            USING d;
        EXECUTE format('ALTER TABLE masq.ingest_ledger ATTACH PARTITION masq.%I FOR VALUES FROM (%L) TO (%L)', part, d, d + 1);
        made := made + 1;
    END LOOP;
    RETURN made;
END $$;
REVOKE ALL ON FUNCTION masq.ensure_ledger_partitions(date, date) FROM PUBLIC;

-- Forgets the message ids that can never be delivered again: a day's partition is dropped whole once p_retention (the
-- queue's retention period, and a margin the caller adds) has passed since the day ended; from the default and
-- undated partitions, the rows of such days, or (undated) committed that long ago, are deleted. Creates the next days'
-- partitions first. Returns the partitions dropped and the rows deleted. Definer: only the owner may drop a partition. A
-- lock it cannot have within 5 s (a batch in flight holds the ledger) fails the call, which the caller tries again later.
CREATE FUNCTION masq.prune_ledger(p_retention interval, OUT dropped text[], OUT deleted bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s'
    AS $$
DECLARE
    horizon timestamptz := now() - p_retention;
    -- Every message sent before this day is past the retention period.
    cutoff date := (horizon AT TIME ZONE 'UTC')::date;
    today date := (now() AT TIME ZONE 'UTC')::date;
    p record;
    n bigint;
BEGIN
    IF p_retention < interval '1 minute' THEN
        RAISE EXCEPTION 'a ledger retention of % would forget messages SQS may still deliver', p_retention USING ERRCODE = '22023';
    END IF;
    PERFORM masq.ensure_ledger_partitions(today - 1, today + 3);
    dropped := '{}';
    FOR p IN
        SELECT c.oid::regclass AS rel, c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'masq.ingest_ledger'::regclass AND c.relname ~ '^ingest_ledger_[0-9]{8}$'
          AND to_date(substr(c.relname, 15), 'YYYYMMDD') + 1 <= cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE masq.ingest_ledger DETACH PARTITION %s', p.rel);
        EXECUTE format('DROP TABLE %s', p.rel);
        dropped := dropped || p.relname::text;
    END LOOP;
    DELETE FROM masq.ingest_ledger_default WHERE sent_day < cutoff;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    DELETE FROM masq.ingest_ledger_undated WHERE committed_at < horizon;
    GET DIAGNOSTICS n = ROW_COUNT;
    deleted := deleted + n;
END $$;
REVOKE ALL ON FUNCTION masq.prune_ledger(interval) FROM PUBLIC;

-- The first days' partitions; `masq run` and masq.prune_ledger keep creating them ahead.
SELECT masq.ensure_ledger_partitions((now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 3);
