import type pg from "pg";

/**
 * Lets today's batch statement write to a database of the legacy migrations (migrations/legacy/), for tests that
 * populate one with today's ingestion before upgrading it: the claim names the day of SentTimestamp
 * (migrations/102_ingest.sql), so the legacy ledger gets that column and key. Its rows keep their message ids,
 * outcomes and commit times, which is all the upgrade carries over (under no known day).
 */
export async function legacyLedgerTakesTodaysClaims(pool: pg.Pool): Promise<void> {
  await pool.query(`ALTER TABLE masq.ingest_ledger ADD COLUMN sent_day date NOT NULL DEFAULT '-infinity';
                    ALTER TABLE masq.ingest_ledger DROP CONSTRAINT ingest_ledger_pkey;
                    ALTER TABLE masq.ingest_ledger ADD CONSTRAINT ingest_ledger_pkey PRIMARY KEY (message_id, sent_day)`);
}
