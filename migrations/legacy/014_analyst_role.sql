-- masq_analyst: what a login needs to query the tables masq writes as the docs show (README.md, docs/data-model.md):
-- SELECT on each registered target table (granted here for those registered so far, and by `masq migrate` when it
-- registers one) and masq.app_version_text, which turns the stored app_version back into text. USAGE on the schema
-- is needed to call that function; it reaches nothing else: masq's tables grant nothing to PUBLIC, and the functions
-- PUBLIC may execute are pure (app_version_text, the redaction helpers, retention_cutoff) or triggers
-- (test/integration/roles.test.ts checks both). No vault, no keys, no audit trail, no quarantine, no ledger.
DO $$
BEGIN
    CREATE ROLE masq_analyst NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

GRANT USAGE ON SCHEMA masq TO masq_analyst;
GRANT EXECUTE ON FUNCTION masq.app_version_text(integer) TO masq_analyst;

DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT relation FROM masq.target_tables LOOP
        EXECUTE format('GRANT SELECT ON TABLE %s TO masq_analyst', t);
    END LOOP;
END $$;
