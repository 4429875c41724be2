-- masq's own state lives in schema masq; the user's table is only ever written as given.

-- One row per SQS message id that has been committed, whatever its outcome. Written in the same statement as the
-- rows themselves, so a redelivered message finds its id here and adds nothing a second time.
CREATE TABLE masq.ingest_ledger (
    message_id    text        PRIMARY KEY,
    outcome       text        NOT NULL CHECK (outcome IN ('written', 'quarantined')),
    committed_at  timestamptz NOT NULL DEFAULT now()
);
-- Pruning deletes by age: ids older than the queue's retention period can never be redelivered.
CREATE INDEX ingest_ledger_committed_at_idx ON masq.ingest_ledger (committed_at);

-- Messages masq will not load, with a stable reason code. body is the parsed JSON with every ip and device_id value
-- replaced by its pseudonym ("hmac:<hex>"); it is NULL when the body was not JSON (it cannot be redacted safely).
CREATE TABLE masq.quarantine (
    message_id      text        PRIMARY KEY,
    reason          text        NOT NULL,
    detail          text        NOT NULL,
    body            text,
    body_length     integer     NOT NULL,
    sent_at         timestamptz,
    received_at     timestamptz NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_reason_idx ON masq.quarantine (reason, quarantined_at);

-- The inverse of masq's app_version encoding (MAJOR*1000000 + MINOR*1000 + PATCH): 2003000 -> '2.3.0'.
CREATE FUNCTION masq.app_version_text(v integer) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT (v / 1000000)::text || '.' || (v / 1000 % 1000)::text || '.' || (v % 1000)::text $$;
