-- Privacy contracts (docs/contracts.md): the kinds a contract declares, and for each table masq writes, the column
-- that says whom a row is about and the columns that hold pseudonyms, by kind. The login table is registered with
-- what it always had: subject user_id, masked_ip of kind ip and masked_device_id of kind device_id.

-- A kind is a contract's name for a pseudonym's domain: ip and device_id for logins, any other a contract declares.
-- Same rule as contracts/contract.schema.json's kind.
ALTER TABLE masq.vault DROP CONSTRAINT vault_kind_check;
ALTER TABLE masq.vault ADD CONSTRAINT vault_kind_check CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$');
ALTER TABLE masq.pseudonym_rotation_map DROP CONSTRAINT pseudonym_rotation_map_kind_check;
ALTER TABLE masq.pseudonym_rotation_map ADD CONSTRAINT pseudonym_rotation_map_kind_check CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$');

-- The column of a registered table that holds the subject (user_id for logins; a contract's `subject` field's column).
ALTER TABLE masq.target_tables ADD COLUMN subject_column name NOT NULL DEFAULT 'user_id';

-- The columns of a registered table that hold pseudonyms: written by `masq migrate` from the contract when it
-- registers the table. recoverable: a `pseudonymize` field (its original is in the vault under kind); false for a
-- `hash` field (never in the vault).
CREATE TABLE masq.target_pseudonym_columns (
    relation     regclass NOT NULL REFERENCES masq.target_tables (relation) ON DELETE CASCADE,
    column_name  name     NOT NULL,
    kind         text     NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$'),
    recoverable  boolean  NOT NULL,
    PRIMARY KEY (relation, column_name)
);
INSERT INTO masq.target_pseudonym_columns (relation, column_name, kind, recoverable)
SELECT relation, 'masked_ip', 'ip', true FROM masq.target_tables
UNION ALL
SELECT relation, 'masked_device_id', 'device_id', true FROM masq.target_tables;

-- A quarantined event of a contract other than the login's: the pseudonyms its redacted copy shows, as
-- "kind:pseudonym" (a login record keeps using masked_ip and masked_device_id). user_id holds the subject.
ALTER TABLE masq.quarantine ADD COLUMN pseudonyms text[]
    CHECK (pseudonyms IS NULL OR array_position(pseudonyms, NULL) IS NULL);
CREATE INDEX quarantine_pseudonyms_idx ON masq.quarantine USING gin (pseudonyms) WHERE pseudonyms IS NOT NULL;

-- Who reads the new column: as masq_unmask reads masked_ip and masked_device_id (105_roles.sql). The roles may not
-- exist where deploy/sql/login-roles.sql was not run; 105_roles.sql creates them, so they do here.
GRANT SELECT (pseudonyms) ON masq.quarantine TO masq_unmask;
