-- `masq quarantine replay` with a contract tells the login's tables from another contract's by masq.is_login_layout
-- (src/db/other-contract-tables.ts), which its logins (masq_unmask with masq_ingest) may now call. The function is
-- the invoker's and reads only the registry and pg_attribute, which masq_unmask reads already: calling it reveals
-- nothing new, and the rule stays written once.
GRANT EXECUTE ON FUNCTION masq.is_login_layout(regclass) TO masq_unmask;
