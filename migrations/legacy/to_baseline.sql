-- The one conversion from the schema of the legacy migrations (001 to 018, frozen in this folder) to the baseline
-- (migrations/101_keys_and_vault.sql to 105_roles.sql). src/db/migrate.ts runs it on a database that masq made
-- before the baseline: first the legacy migrations it lacks, then this file, then it records the baseline's
-- migrations beside the legacy ones (kept as history, see src/db/migrate.ts), all in one transaction. Only for upgrades: never edited, like the
-- migrations before it. The baseline defines each object in its form of migration 018; what differs is below, and
-- test/integration/upgrade.test.ts checks that an upgraded schema equals a new one. Plain ASCII on purpose.

-- 1. The forms of four functions that migration 016 kept beside their successors, which nothing calls.
DROP FUNCTION masq.erase_private_values(regclass);
DROP FUNCTION masq.erase_subject_preview(regclass, text, boolean);
DROP FUNCTION masq.audit_subject_erase(text, jsonb, text, regclass, text, boolean, integer);
DROP FUNCTION masq.audit_subject_erase_preview(text, jsonb, text, regclass, text, boolean, integer);

-- 2. The ingest ledger, partitioned by the day of the message's SentTimestamp (see 102_ingest.sql). The ids claimed
-- so far have no known day: they go to the undated partition, which the claim also looks in, so a redelivery of one
-- of them still adds nothing; they are pruned by committed_at.
-- The old table goes before the new one is made, so that every name (of its constraints too, which Postgres 18
-- names for NOT NULL) is the new one's as in a new database.
CREATE TEMPORARY TABLE ledger_before_partitioning ON COMMIT DROP AS SELECT message_id, outcome, committed_at FROM masq.ingest_ledger;
DROP TABLE masq.ingest_ledger;

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

INSERT INTO masq.ingest_ledger (message_id, outcome, committed_at, sent_day)
SELECT message_id, outcome, committed_at, '-infinity' FROM ledger_before_partitioning;
DROP TABLE ledger_before_partitioning;

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

SELECT masq.ensure_ledger_partitions((now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 3);

GRANT DELETE, INSERT, SELECT ON masq.ingest_ledger TO masq_ingest;
GRANT UPDATE (outcome) ON masq.ingest_ledger TO masq_unmask;
GRANT SELECT (message_id, outcome) ON masq.ingest_ledger TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.ensure_ledger_partitions(date, date) TO masq_ingest;
GRANT EXECUTE ON FUNCTION masq.prune_ledger(interval) TO masq_ingest;
