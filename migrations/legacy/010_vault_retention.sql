-- Retention (MASQ_VAULT_RETENTION_DAYS, `masq vault prune`, docs/operations.md "Retention"): vault entries that no
-- row newer than the retention period uses, and quarantine records older than it, are deleted, in bounded batches,
-- each batch with its own audit row ('vault-prune', allowed by migration 007).
--
-- The cutoff is a day: the target table's create_date is the day of the message's SentTimestamp (UTC), so "older
-- than N days" means create_date < today (UTC) - N, and a quarantine record is older than the period when it was
-- quarantined before 00:00 UTC of that day.
--
-- Deletion runs only through the SECURITY DEFINER functions below, which decide what may go; masq_erase has no
-- DELETE on masq.vault or masq.quarantine. Each deleting call appends its own audit row (counted by the server),
-- and the deferred check of migration 005 refuses to commit it unsealed: pruning needs the audit key, so the master
-- key, as well as the role. A batch that deletes vault entries advances the vault epoch of migration 009 first, so
-- that no row ingestion is committing is left without its entry. Plain ASCII on purpose (see 005).

-- `masq status` shows the oldest recoverable value's age: min(created_at), from this index.
CREATE INDEX vault_created_at_idx ON masq.vault (created_at);

-- The first day that is still inside a retention period of p_days days.
CREATE FUNCTION masq.retention_cutoff(p_days integer) RETURNS date
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT (now() AT TIME ZONE 'UTC')::date - p_days $$;

-- The table prune checks for rows is one masq writes (migration 007, masq.registered_target: never a caller's
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

-- Which of these vault entries (kinds[i], pseudonyms[i]) no row of p_table dated on or after the cutoff (nor a row
-- without a date) and no quarantine record from on or after the cutoff uses, as "kind:pseudonym". Two lookups in
-- the target table per call, by masked_ip and by masked_device_id: an index on either column (docs/operations.md,
-- "Retention") makes them index scans; masq does not create one on the user's table. A quarantine record uses the
-- values its copy shows (migration 009's masq.redacted_pseudonym: the redacted copy's "hmac:" values, or a refused
-- row's masked row, db_rejected), looked up per kind in its expression indexes. VOLATILE: each statement sees every
-- committed row.
CREATE FUNCTION masq.retention_unused(p_table regclass, p_cutoff date, p_kinds text[], p_pseudonyms text[]) RETURNS text[]
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cutoff_at timestamptz := p_cutoff::timestamp AT TIME ZONE 'UTC';
    keep_ip text[];
    keep_device text[];
    unused text[];
BEGIN
    EXECUTE format('SELECT array_agg(DISTINCT t.masked_ip::text) FROM %s t WHERE t.masked_ip::text = ANY ($1) AND (t.create_date >= $2 OR t.create_date IS NULL)', p_table)
        INTO keep_ip
        USING (SELECT coalesce(array_agg(p), '{}') FROM unnest(p_kinds, p_pseudonyms) AS u(k, p) WHERE k = 'ip'), p_cutoff;
    EXECUTE format('SELECT array_agg(DISTINCT t.masked_device_id::text) FROM %s t WHERE t.masked_device_id::text = ANY ($1) AND (t.create_date >= $2 OR t.create_date IS NULL)', p_table)
        INTO keep_device
        USING (SELECT coalesce(array_agg(p), '{}') FROM unnest(p_kinds, p_pseudonyms) AS u(k, p) WHERE k = 'device_id'), p_cutoff;
    SELECT array_agg(c.kind || ':' || c.pseudonym ORDER BY c.kind, c.pseudonym) INTO unused
    FROM unnest(p_kinds, p_pseudonyms) AS c(kind, pseudonym)
    WHERE NOT (c.kind = 'ip' AND c.pseudonym = ANY (coalesce(keep_ip, '{}')))
      AND NOT (c.kind = 'device_id' AND c.pseudonym = ANY (coalesce(keep_device, '{}')))
      AND NOT (c.kind = 'ip' AND EXISTS (SELECT 1 FROM masq.quarantine q
                      WHERE masq.redacted_pseudonym(q.body, q.reason, 'ip') = c.pseudonym AND q.quarantined_at >= cutoff_at))
      AND NOT (c.kind = 'device_id' AND EXISTS (SELECT 1 FROM masq.quarantine q
                      WHERE masq.redacted_pseudonym(q.body, q.reason, 'device_id') = c.pseudonym AND q.quarantined_at >= cutoff_at));
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

-- The oldest recoverable value, for `masq status` (any role that may read the vault's non-secret columns).
-- masq_erase: the prune functions, and the audit key and seal that every deleting batch needs. It reads the trail
-- (to seal its own rows and for `masq audit verify`), never a ciphertext or a wrapped data key.
GRANT EXECUTE ON FUNCTION masq.vault_prune_batch(regclass, integer, text, text, integer, jsonb, integer) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.quarantine_prune_batch(integer, integer, jsonb, integer) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.audit_key() TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.create_audit_key(text, text, bytea, text) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.audit_seal(bigint, bytea) TO masq_erase;
GRANT SELECT ON masq.audit TO masq_erase;
GRANT SELECT (kind, pseudonym, key_version, data_key_id, created_at, suspect) ON masq.vault TO masq_erase;
GRANT SELECT (version, provider, master_key_id, fingerprint, created_at, rewrapped_at) ON masq.audit_keys TO masq_erase;
GRANT SELECT (id, provider, master_key_id, created_at, rewrapped_at) ON masq.data_keys TO masq_erase;
GRANT SELECT (version, state, provider, master_key_id, fingerprint, created_at, retired_at, rewrapped_at)
    ON masq.pseudonym_keys TO masq_erase;
