-- Login roles for masq (SECURITY.md, "Roles"). Run once as the schema owner, after `masq migrate`, with psql:
--
--   psql "$OWNER_DATABASE_URL" -v ON_ERROR_STOP=1 \
--     -v service_role=masq_service -v service_password="$(openssl rand -hex 24)" \
--     -v person_role=alice         -v person_password="$(openssl rand -hex 24)" \
--     -v table=public.user_logins \
--     -f deploy/sql/login-roles.sql
--
-- masq_ingest and masq_unmask (made by migrations/105_roles.sql) cannot log in: they hold the rights, these logins hold them.
-- A test (test/integration/roles.test.ts) runs this file and then works as each login.

-- The ingestion service: `masq run` (and `masq status`). Write-only on the table.
CREATE ROLE :"service_role" LOGIN PASSWORD :'service_password';
GRANT masq_ingest TO :"service_role";
GRANT INSERT ON TABLE :table TO masq_ingest;

-- A person who may recover values: `masq unmask`, `masq pseudonym`, `masq subject export`, `masq quarantine show
-- --original`, `masq audit list|verify|checkpoint`.
-- SELECT on the table is for `masq unmask --user-id/--from/--to` and `masq subject export` (which reads it only
-- for a login that may SELECT it).
CREATE ROLE :"person_role" LOGIN PASSWORD :'person_password';
GRANT masq_unmask TO :"person_role";
GRANT SELECT ON TABLE :table TO masq_unmask;

-- No session of either should sit in an open transaction: ingestion, a rotation and the deleters (erase, prune) take
-- turns on the active pseudonym key and the vault epoch (migrations/101_keys_and_vault.sql), and a transaction left open by hand
-- (BEGIN, then nothing) holds the others off. masq's own transactions never idle; such a session is ended after a
-- minute. The session can lift this timeout itself, so it is not what bounds the waits: a rotation or a deleter
-- that waits 1 s for a session of a masq role ends that session (migrations/104_lifecycle.sql, SECURITY.md "Waits"), which needs
-- the schema owner to have the privileges of pg_signal_backend (next step).
ALTER ROLE :"service_role" SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE :"person_role" SET idle_in_transaction_session_timeout = '60s';

-- The schema owner (the role running this file) must be able to end sessions of the login roles; a superuser owner
-- can already. Otherwise a superuser (or a role with ADMIN OPTION on pg_signal_backend) runs once:
--   GRANT pg_signal_backend TO <the schema owner>;
-- pg_signal_backend can end no superuser's session: masq never ends those, nor the owner's, and names them instead.
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'pg_signal_backend', 'USAGE') THEN
        RAISE NOTICE 'the schema owner % lacks pg_signal_backend: a rotation or an erasure cannot end a masq login''s session that holds it up, and fails naming it; as a superuser: GRANT pg_signal_backend TO %', current_user, current_user;
    END IF;
END $$;

-- `masq quarantine replay` reads originals (masq_unmask) and writes as ingestion does (masq_ingest). For a person
-- who replays, add:
--   GRANT masq_ingest TO alice;
-- `masq subject erase` (SECURITY.md, "Erasure") needs masq_erase (made by migrations/105_roles.sql). It deletes only through
-- masq's audited functions, so it needs no grant on the table. For a person who erases, add (the timeout as above,
-- if that login was not made here):
--   GRANT masq_erase TO alice;
--   ALTER ROLE alice SET idle_in_transaction_session_timeout = '60s';
-- An analyst who queries the table (README.md, docs/data-model.md: pseudonyms, masq.app_version_text) holds
-- masq_analyst (made by migrations/105_roles.sql, with SELECT on every table `masq migrate` registered); it reads nothing of
-- the vault, the keys, the audit trail, the quarantine or the ledger:
--   CREATE ROLE bob LOGIN PASSWORD '...';
--   GRANT masq_analyst TO bob;
-- If CONNECT on the database was revoked from PUBLIC, also:
--   GRANT CONNECT ON DATABASE analytics TO masq_service, alice;
