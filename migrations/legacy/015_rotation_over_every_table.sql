-- A pseudonym key rotation rewrites every registered target table: the vault and the rotation map are
-- shared by all of them, and retirement empties the map, so a table left out would keep old pseudonyms that match
-- no vault value. The table pass takes the tables one after another; the cursor columns of migration 004
-- (table_blocks, table_block_done, table_relfilenode) are those of target_table, the table in progress, and
-- tables_done the tables finished, in the order they were done. The old key retires only once no registered table
-- (nor the table the rotation was started with) is left out of tables_done. table_rows_done counts the rows of every
-- table. A rotation in progress when this migration runs keeps its cursor on its one table, and goes on to the
-- others when that one is done.
ALTER TABLE masq.pseudonym_rotation ADD COLUMN tables_done text[] NOT NULL DEFAULT '{}';

COMMENT ON COLUMN masq.pseudonym_rotation.target_table IS
    'The table the table pass is on (the one named at the start, --table or MASQ_TABLE, until the pass moves on); the cursor columns are this table''s';
COMMENT ON COLUMN masq.pseudonym_rotation.tables_done IS
    'The tables the table pass has finished, as schema.name, in order; the old key retires once every registered table is among them';
