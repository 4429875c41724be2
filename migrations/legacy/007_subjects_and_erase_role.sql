-- The PII lifecycle (subject export and erasure, retention, audited quarantine originals): what they share.
--
-- 1. A quarantine record names the user it is about, so that `masq subject export|erase` find a user's refused
--    messages without decrypting every original. The name is taken from the record's stored copy: a redacted copy
--    keeps a top-level user_id in clear when it is a string of at most 128 characters, a number or a boolean (the
--    same value the user's table would hold in clear); a db_rejected record's copy is the masked row itself, whose
--    userId is the row's user_id. A record without a copy (the body was not JSON) or whose copy shows no user id
--    is about nobody masq can name: retention (`masq vault prune`) is what removes it.
CREATE FUNCTION masq.redacted_user_id(p_body text, p_reason text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v jsonb;
BEGIN
    IF p_body IS NULL OR left(p_body, 1) <> '{' THEN
        RETURN NULL;
    END IF;
    -- Only a db_rejected copy is a masked row (commit-batch.ts); in a redacted copy a "userId" key is a marker.
    v := p_body::jsonb -> (CASE WHEN p_reason = 'db_rejected' THEN 'userId' ELSE 'user_id' END);
    IF v IS NULL OR jsonb_typeof(v) NOT IN ('string', 'number', 'boolean') THEN
        RETURN NULL;
    END IF;
    -- A value the allowlist did not keep is shown as a marker of its type and size ("[string: 129 chars]").
    IF p_reason <> 'db_rejected' AND ((v #>> '{}') ~ '^\[(string|number): [0-9]+ chars\]$' OR (v #>> '{}') ~ '^\[(object: [0-9]+ keys|array: [0-9]+ items)\]$') THEN
        RETURN NULL;
    END IF;
    RETURN left(v #>> '{}', 128);
EXCEPTION WHEN invalid_text_representation OR data_exception THEN
    -- Only masq writes these copies (always JSON); a record from before the allowlist names nobody.
    RETURN NULL;
END $$;

ALTER TABLE masq.quarantine ADD COLUMN user_id text GENERATED ALWAYS AS (masq.redacted_user_id(body, reason)) STORED;
CREATE INDEX quarantine_user_id_idx ON masq.quarantine (user_id) WHERE user_id IS NOT NULL;
GRANT SELECT (user_id) ON masq.quarantine TO masq_unmask;

-- 2. The actions the lifecycle commands record in the audit chain.
ALTER TABLE masq.audit DROP CONSTRAINT audit_action_check;
ALTER TABLE masq.audit ADD CONSTRAINT audit_action_check CHECK (action IN (
    'unmask', 'pseudonym', 'replay', 'rotate-pseudonym-key', 'rotate-master-key',
    'subject-export', 'subject-erase', 'vault-prune', 'quarantine-original'));

-- 3. masq_erase (cluster-wide, NOLOGIN, granted by an operator to a real login): deletes a user's data and prunes
--    what retention no longer allows. It never reads a ciphertext or a wrapped key; later migrations grant it the
--    functions it runs.
DO $$
BEGIN
    CREATE ROLE masq_erase NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
GRANT USAGE ON SCHEMA masq TO masq_erase;
GRANT SELECT ON masq.schema_migrations TO masq_erase;

-- 4. The tables masq writes, registered by `masq migrate` (the owner) when it checks or creates one. The lifecycle
--    functions run with the owner's rights, so they act only on a registered, ordinary, persistent table: never on a
--    name a caller passes for a temporary table or a view of their own, whose triggers or functions would then run
--    as the owner.
CREATE TABLE masq.target_tables (
    relation      regclass    PRIMARY KEY,
    registered_at timestamptz NOT NULL DEFAULT now()
);
DO $$
BEGIN
    IF to_regclass('public.user_logins') IS NOT NULL THEN
        INSERT INTO masq.target_tables (relation) VALUES ('public.user_logins'::regclass);
    END IF;
END $$;

CREATE FUNCTION masq.registered_target(p_table regclass) RETURNS regclass
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF p_table IS NULL OR NOT EXISTS (
        SELECT 1 FROM masq.target_tables t JOIN pg_class c ON c.oid = t.relation
        WHERE t.relation = p_table AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p') THEN
        RAISE EXCEPTION 'table % is not a table masq writes (run masq migrate as the owner with MASQ_TABLE set to it)', p_table
            USING ERRCODE = '42501';
    END IF;
    RETURN p_table;
END $$;
REVOKE ALL ON FUNCTION masq.registered_target(regclass) FROM PUBLIC;
