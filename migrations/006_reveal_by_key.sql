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
