-- Two corrections to migration 005.
--
-- masq.vault_ciphertexts looked values up with `kind || ':' || pseudonym = ANY (...)`, which no index serves: every
-- unmask read the whole vault. Split each subject back into (kind, pseudonym) and join on the primary key instead.
CREATE OR REPLACE FUNCTION masq.vault_ciphertexts(p_seq bigint)
    RETURNS TABLE (kind text, pseudonym text, key_version integer, data_key_id uuid, nonce bytea, ciphertext bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT v.kind, v.pseudonym, v.key_version, v.data_key_id, v.nonce, v.ciphertext
    FROM unnest(masq.committed_reveal(p_seq, 'unmask')) AS s(subject)
    JOIN masq.vault v ON v.kind = split_part(s.subject, ':', 1) AND v.pseudonym = substr(s.subject, strpos(s.subject, ':') + 1)
    ORDER BY v.kind, v.pseudonym
$$;
REVOKE ALL ON FUNCTION masq.vault_ciphertexts(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION masq.vault_ciphertexts(bigint) TO masq_unmask;

-- The same shape for the encrypted originals: one primary-key lookup per message id named by the audit row.
CREATE OR REPLACE FUNCTION masq.quarantine_originals(p_seq bigint)
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
GRANT EXECUTE ON FUNCTION masq.quarantine_originals(bigint) TO masq_unmask;

-- An audit row's time is taken once the chain lock is held (clock_timestamp(), not the transaction's start), so that
-- times follow seq: an unmask that waited for another one's commit is recorded after it, not before.
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
    PERFORM 1 FROM masq.audit_chain FOR UPDATE;
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
