-- The roles (cluster-wide, NOLOGIN): an operator grants them to real login roles (SECURITY.md, "Roles";
-- deploy/sql/login-roles.sql). Every privilege a role has on schema masq is granted here, in one place; the functions
-- are revoked from PUBLIC where they are defined. masq's tables grant nothing to PUBLIC, and the functions PUBLIC may
-- execute are pure (app_version_text, retention_cutoff) or triggers (test/integration/roles.test.ts checks both).
-- Plain ASCII on purpose (see 101_keys_and_vault.sql).
--   masq_ingest   runs `masq run`: writes rows, the ledger, the quarantine and the vault (through the narrow
--                 functions of 101_keys_and_vault.sql), and can never read a ciphertext or a wrapped data key.
--   masq_unmask   reveals (unmask, subject export, quarantine originals, replay) through the audited two-step functions
--                 of 103_audit.sql and 104_lifecycle.sql; it reads no ciphertext directly.
--   masq_erase    deletes a user's data and prunes what retention no longer allows, through the audited functions of
--                 104_lifecycle.sql; it never reads a ciphertext or a wrapped key, and has no DELETE on masq's tables.
--   masq_analyst  what a login needs to query the tables masq writes as the docs show (README.md,
--                 docs/data-model.md): SELECT on each registered target table (granted by `masq migrate` when it
--                 registers one) and masq.app_version_text, which turns the stored app_version back into text. No
--                 vault, no keys, no audit trail, no quarantine, no ledger.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['masq_ingest', 'masq_unmask', 'masq_erase', 'masq_analyst'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END LOOP;
END $$;

-- masq_ingest
GRANT USAGE ON SCHEMA masq TO masq_ingest;
GRANT DELETE, INSERT, SELECT ON masq.ingest_ledger TO masq_ingest;
GRANT SELECT ON masq.pseudonym_rotation TO masq_ingest;
GRANT INSERT ON masq.quarantine TO masq_ingest;
GRANT SELECT ON masq.schema_migrations TO masq_ingest;
GRANT SELECT ON masq.vault_epoch TO masq_ingest;
GRANT SELECT (version, provider, master_key_id, fingerprint, created_at, rewrapped_at, chain_start) ON masq.audit_keys TO masq_ingest;
GRANT SELECT (id, provider, master_key_id, created_at, rewrapped_at) ON masq.data_keys TO masq_ingest;
GRANT SELECT (version, state, provider, master_key_id, fingerprint, created_at, retired_at, rewrapped_at) ON masq.pseudonym_keys TO masq_ingest;
GRANT SELECT (message_id, reason, detail, body, body_length, sent_at, received_at, quarantined_at, replayed_at, body_data_key_id) ON masq.quarantine TO masq_ingest;
GRANT SELECT (kind, pseudonym, key_version, data_key_id, created_at, suspect, suspect_seq) ON masq.vault TO masq_ingest;
GRANT EXECUTE ON FUNCTION masq.add_data_key(uuid, text, text, bytea) TO masq_ingest;
GRANT EXECUTE ON FUNCTION masq.ensure_ledger_partitions(date, date) TO masq_ingest;
GRANT EXECUTE ON FUNCTION masq.add_vault_values(integer, text[], text[], uuid[], bytea[], bytea[]) TO masq_ingest;
GRANT EXECUTE ON FUNCTION masq.create_first_pseudonym_key(text, text, bytea, text) TO masq_ingest;
GRANT EXECUTE ON FUNCTION masq.lock_pseudonym_key(integer) TO masq_ingest;
GRANT EXECUTE ON FUNCTION masq.lock_vault_epoch() TO masq_ingest;
GRANT EXECUTE ON FUNCTION masq.prune_ledger(interval) TO masq_ingest;
GRANT EXECUTE ON FUNCTION masq.pseudonym_key_wrapped(integer) TO masq_ingest;

-- masq_unmask
GRANT USAGE ON SCHEMA masq TO masq_unmask;
GRANT SELECT ON masq.audit TO masq_unmask;
GRANT SELECT ON masq.pseudonym_rotation TO masq_unmask;
GRANT SELECT ON masq.schema_migrations TO masq_unmask;
GRANT SELECT ON masq.unmask_audit TO masq_unmask;
GRANT SELECT ON masq.vault_epoch TO masq_unmask;
GRANT SELECT (version, provider, master_key_id, fingerprint, created_at, rewrapped_at, chain_start) ON masq.audit_keys TO masq_unmask;
GRANT SELECT (id, provider, master_key_id, created_at, rewrapped_at) ON masq.data_keys TO masq_unmask;
GRANT UPDATE (outcome) ON masq.ingest_ledger TO masq_unmask;
GRANT SELECT (message_id, outcome) ON masq.ingest_ledger TO masq_unmask;
GRANT SELECT (version, state, provider, master_key_id, fingerprint, created_at, retired_at, rewrapped_at) ON masq.pseudonym_keys TO masq_unmask;
GRANT UPDATE (replayed_at) ON masq.quarantine TO masq_unmask;
GRANT SELECT (message_id, reason, detail, body, body_length, sent_at, received_at, quarantined_at, replayed_at, body_data_key_id, user_id, masked_ip, masked_device_id) ON masq.quarantine TO masq_unmask;
GRANT SELECT (kind, pseudonym, key_version, data_key_id, created_at, suspect, suspect_seq) ON masq.vault TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_key() TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_pseudonym(text, jsonb, jsonb, text[], integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_quarantine_original(text, jsonb, jsonb, text[], integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_replay_corrected(text, jsonb, jsonb, text, integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_reveal_bodies(text, jsonb, jsonb, text[], integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_reveal_vault(text, jsonb, jsonb, text[], text[], integer, integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_seal(bigint, bytea) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.audit_subject_export(text, jsonb, jsonb, text, text, regclass, date, date, integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.flag_vault_suspect(bigint, text, text[], text[], integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.pseudonym_key_wrapped(integer) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.quarantine_original(bigint) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.quarantine_originals(bigint) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.registered_tables() TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.subject_export_quarantine(bigint, text) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.subject_export_rows(bigint, text) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.vault_ciphertexts(bigint) TO masq_unmask;
GRANT EXECUTE ON FUNCTION masq.wrapped_data_keys(uuid[]) TO masq_unmask;

-- masq_erase
GRANT USAGE ON SCHEMA masq TO masq_erase;
GRANT SELECT ON masq.audit TO masq_erase;
GRANT SELECT ON masq.schema_migrations TO masq_erase;
GRANT SELECT ON masq.vault_epoch TO masq_erase;
GRANT SELECT (version, provider, master_key_id, fingerprint, created_at, rewrapped_at, chain_start) ON masq.audit_keys TO masq_erase;
GRANT SELECT (id, provider, master_key_id, created_at, rewrapped_at) ON masq.data_keys TO masq_erase;
GRANT SELECT (version, state, provider, master_key_id, fingerprint, created_at, retired_at, rewrapped_at) ON masq.pseudonym_keys TO masq_erase;
GRANT SELECT (kind, pseudonym, key_version, data_key_id, created_at, suspect, suspect_seq) ON masq.vault TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.audit_key() TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.audit_seal(bigint, bytea) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.audit_subject_erase(text, jsonb, text, regclass, text, boolean, boolean, integer) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.audit_subject_erase_preview(text, jsonb, text, regclass, text, boolean, boolean, integer) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.audit_subject_erased(bigint, jsonb, integer) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.end_lock_blockers(integer) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.erase_subject_batch(bigint, integer) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.quarantine_prune_batch(integer, integer, jsonb, integer) TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.registered_tables() TO masq_erase;
GRANT EXECUTE ON FUNCTION masq.vault_prune_batch(regclass, integer, text, text, integer, jsonb, integer) TO masq_erase;

-- masq_analyst
GRANT USAGE ON SCHEMA masq TO masq_analyst;
GRANT EXECUTE ON FUNCTION masq.app_version_text(integer) TO masq_analyst;
