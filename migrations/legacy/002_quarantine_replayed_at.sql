-- `masq quarantine replay` loads a quarantined message after all (a corrected body, or a db_rejected row once the
-- table accepts it). The quarantine record stays, marked with when it was replayed, so the history is kept.
ALTER TABLE masq.quarantine ADD COLUMN replayed_at timestamptz;
CREATE INDEX quarantine_pending_idx ON masq.quarantine (quarantined_at) WHERE replayed_at IS NULL;
