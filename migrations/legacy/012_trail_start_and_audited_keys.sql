-- A trail that cannot be blanked, and nothing destroyed or replaced unaudited (SECURITY.md, "The audit trail" and
-- "Roles").
--
-- 1. The database records where the MAC chain begins: masq.audit_keys.chain_start, the seq of the first row sealed
--    under the audit key. Every row from there on must carry a valid MAC; only rows before it (copied from
--    masq.unmask_audit by migration 005) may lack one. The row at chain_start is the one sealed row whose prev_mac is
--    NULL, so moving the marker anywhere else (later, earlier, past the end) makes `masq audit verify` fail: the row
--    it then names has no MAC, or a prev_mac, or is not there. A key made from here on is made with its own sealed
--    row ('audit-key') at chain_start, in the same transaction, so a key without its first row cannot exist.
-- 2. The audit key is made only by the owner (`masq migrate` with the master key configured, or the owner's first
--    audited action), after the creator unwrapped it (audit/audit-key.ts): the database cannot tell whether a wrapped
--    key unwraps, so it trusts no other creator. Before this migration any masq_unmask or masq_erase login could plant
--    one that does not unwrap, and so stop every audited command (and, with it, make a rotation run unaudited).
-- 3. A vault value is flagged suspect (and so may be replaced by ingestion, masq.add_vault_values) only by a sealed
--    'vault-suspect' row that names it and the committed reveal of the same login that found the mismatch. Before
--    this migration any masq_unmask login could flag any value and then, with masq_ingest, overwrite it unaudited.
-- Plain ASCII on purpose (see 005).

-- ---------------------------------------------------------------------------------------------------------------
-- The actions this migration records.
ALTER TABLE masq.audit DROP CONSTRAINT audit_action_check;
ALTER TABLE masq.audit ADD CONSTRAINT audit_action_check CHECK (action IN (
    'unmask', 'pseudonym', 'replay', 'rotate-pseudonym-key', 'rotate-master-key',
    'subject-export', 'subject-erase', 'vault-prune', 'quarantine-original', 'audit-key', 'vault-suspect'));

-- ---------------------------------------------------------------------------------------------------------------
-- 1. Where the chain begins. On a database that already sealed rows: the first of them (the chain's rows come after
-- every row migration 005 copied, and each audited action seals its row before it commits). A key under which no row
-- was ever sealed protects nothing and may be one planted by a login (finding 8 of issue 17): it goes, and the
-- owner's next `masq migrate` (or audited action) makes a key that is proven to unwrap, with its first row.
ALTER TABLE masq.audit_keys ADD COLUMN chain_start bigint;
UPDATE masq.audit_keys k SET chain_start = (SELECT min(a.seq) FROM masq.audit a WHERE a.key_version = k.version);
DELETE FROM masq.audit_keys WHERE chain_start IS NULL;
ALTER TABLE masq.audit_keys ALTER COLUMN chain_start SET NOT NULL;
GRANT SELECT (chain_start) ON masq.audit_keys TO masq_ingest, masq_unmask, masq_erase;

-- ---------------------------------------------------------------------------------------------------------------
-- 2. The audit key, made by the owner only, with its first row. Returns that row's seq, unsealed (the caller seals it
-- with the key it just proved to unwrap, then commits), or NULL when the database has a key already (a racing
-- creator's, which the caller then reads and unwraps).
DROP FUNCTION masq.create_audit_key(text, text, bytea, text);
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
    PERFORM 1 FROM masq.audit_chain FOR UPDATE;
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

-- ---------------------------------------------------------------------------------------------------------------
-- 3. Suspect vault values, flagged by an audited reveal only.
--
-- suspect_seq: the 'vault-suspect' row that flagged the value (the replacement that masq.add_vault_values then makes
-- is the one that row allows). Flags set before this migration came from a function any masq_unmask login could call:
-- they are cleared (the values stay; the next reveal that finds one of them planted flags it again, audited).
ALTER TABLE masq.vault ADD COLUMN suspect_seq bigint;
UPDATE masq.vault SET suspect = false WHERE suspect;
GRANT SELECT (suspect_seq) ON masq.vault TO masq_ingest, masq_unmask, masq_erase;

DROP FUNCTION masq.flag_vault_suspect(text[], text[]);

-- The (kind, pseudonym) pairs a committed, recent reveal of this login handed out: an unmask's subjects, or the values
-- of the rows a subject export served (the user id is checked against the export's grant, migration 008).
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
GRANT EXECUTE ON FUNCTION masq.flag_vault_suspect(bigint, text, text[], text[], integer) TO masq_unmask;
