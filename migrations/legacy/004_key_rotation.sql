-- Pseudonym key rotation (`masq rotate pseudonym-key`): the state of a rotation in progress, so that an interrupted
-- one resumes where it stopped. Both tables are empty except during a rotation, and only the owner reads them:
-- the map links pseudonyms under the old key to those under the new one, and is emptied when the old key retires.

-- At most one rotation at a time (one 'retiring' key): a row from the switch to the retirement of the old key.
CREATE TABLE masq.pseudonym_rotation (
    from_version      integer     PRIMARY KEY REFERENCES masq.pseudonym_keys (version),
    to_version        integer     NOT NULL REFERENCES masq.pseudonym_keys (version),
    -- Taken once the switch held the old key's row: every batch written under the old key began before it, every
    -- batch under the new key after it (the quarantine pass selects the old-key records by it).
    switched_at       timestamptz NOT NULL,
    -- The table rewritten (MASQ_TABLE at the start); a resume with another table is refused.
    target_table      text        NOT NULL,
    phase             text        NOT NULL CHECK (phase IN ('vault', 'quarantine', 'table')),
    vault_done        bigint      NOT NULL DEFAULT 0,
    -- The quarantine pass goes in message_id order; the last record done.
    quarantine_after  text,
    quarantine_done   bigint      NOT NULL DEFAULT 0,
    -- The table pass goes in physical blocks: [0, table_block_done) is done, of table_blocks (the table's size when
    -- the pass began: rows added later are under the new key). table_relfilenode notices a rewrite of the table
    -- (VACUUM FULL, CLUSTER), after which block numbers mean nothing and the pass starts over.
    table_blocks      bigint,
    table_block_done  bigint      NOT NULL DEFAULT 0,
    table_relfilenode oid,
    table_rows_done   bigint      NOT NULL DEFAULT 0,
    -- Pseudonyms in kept bodies that no vault row maps (replaced by a marker): expected to stay 0.
    unmapped          bigint      NOT NULL DEFAULT 0
);
-- At most one rotation at a time, whatever the code does: a second row collides on this index.
CREATE UNIQUE INDEX pseudonym_rotation_one_at_a_time ON masq.pseudonym_rotation ((true));

-- Old pseudonym -> new, per kind: filled by the vault pass, read by the quarantine and table passes.
CREATE TABLE masq.pseudonym_rotation_map (
    kind           text NOT NULL CHECK (kind IN ('ip', 'device_id')),
    old_pseudonym  text NOT NULL,
    new_pseudonym  text NOT NULL,
    PRIMARY KEY (kind, old_pseudonym)
);
