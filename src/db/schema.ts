import { Kysely, PostgresDialect, type ColumnType, type PostgresPool, type PostgresPoolClient } from "kysely";
import type pg from "pg";
import type { Db } from "./pool.ts";

/**
 * masq's own tables (schema masq) as the migrations leave them: each column's type as Postgres's format_type names it,
 * "?" when it may be null. One declaration for both sides: kysely's `Database` type below is derived from it, and
 * test/integration/schema.test.ts compares it with a freshly migrated database, so a migration that adds, drops or
 * retypes a column fails that test until this table says the same. The user's table is not here: it is written with
 * hand-written set-based SQL (the hot path) and read only by name.
 */
export const SCHEMA_TABLES = {
  "masq.audit": {
    seq: "bigint",
    at: "timestamp with time zone",
    action: "text",
    login_role: "text",
    effective_role: "text",
    client_reported: "jsonb",
    reason: "text",
    selector: "jsonb",
    subjects: "text[]",
    value_count: "integer",
    key_version: "integer?",
    prev_mac: "bytea?",
    mac: "bytea?",
  },
  "masq.audit_chain": {
    one: "boolean",
  },
  "masq.audit_keys": {
    version: "integer",
    provider: "text",
    master_key_id: "text",
    wrapped: "bytea",
    fingerprint: "text",
    created_at: "timestamp with time zone",
    rewrapped_at: "timestamp with time zone?",
    chain_start: "bigint",
  },
  "masq.data_keys": {
    id: "uuid",
    provider: "text",
    master_key_id: "text",
    wrapped: "bytea",
    created_at: "timestamp with time zone",
    rewrapped_at: "timestamp with time zone?",
  },
  "masq.erasures": {
    seq: "bigint",
    login_role: "text",
    target: "regclass",
    user_id: "text",
    vault_only: "boolean",
    resumes: "bigint[]",
    rows: "bigint",
    quarantine: "bigint",
    originals: "bigint",
    vault: "bigint",
    started_at: "timestamp with time zone",
    touched_at: "timestamp with time zone",
    every_table: "boolean",
  },
  "masq.ingest_ledger": {
    message_id: "text",
    outcome: "text",
    committed_at: "timestamp with time zone",
    /** The UTC day of SentTimestamp: the partition key (-infinity: undated). */
    sent_day: "date",
  },
  "masq.pseudonym_keys": {
    version: "integer",
    state: "text",
    provider: "text",
    master_key_id: "text?",
    wrapped: "bytea?",
    fingerprint: "text",
    created_at: "timestamp with time zone",
    retired_at: "timestamp with time zone?",
    rewrapped_at: "timestamp with time zone?",
  },
  "masq.pseudonym_rotation": {
    from_version: "integer",
    to_version: "integer",
    switched_at: "timestamp with time zone",
    target_table: "text",
    phase: "text",
    vault_done: "bigint",
    quarantine_after: "text?",
    quarantine_done: "bigint",
    table_blocks: "bigint?",
    table_block_done: "bigint",
    table_relfilenode: "oid?",
    table_rows_done: "bigint",
    unmapped: "bigint",
    forged: "bigint",
    tables_done: "text[]",
  },
  "masq.pseudonym_rotation_map": {
    kind: "text",
    old_pseudonym: "text",
    new_pseudonym: "text",
  },
  "masq.quarantine": {
    message_id: "text",
    reason: "text",
    detail: "text",
    body: "text?",
    body_length: "integer",
    sent_at: "timestamp with time zone?",
    received_at: "timestamp with time zone",
    quarantined_at: "timestamp with time zone",
    replayed_at: "timestamp with time zone?",
    body_data_key_id: "uuid?",
    body_nonce: "bytea?",
    body_ciphertext: "bytea?",
    user_id: "text?",
    masked_ip: "text?",
    masked_device_id: "text?",
    pseudonyms: "text[]?",
  },
  "masq.schema_migrations": {
    version: "integer",
    name: "text",
    applied_at: "timestamp with time zone",
  },
  "masq.subject_export_grants": {
    seq: "bigint",
    user_digest: "bytea",
    target: "regclass",
    from_date: "date?",
    to_date: "date?",
    at: "timestamp with time zone",
  },
  "masq.target_pseudonym_columns": {
    relation: "regclass",
    column_name: "name",
    kind: "text",
    recoverable: "boolean",
  },
  "masq.target_tables": {
    relation: "regclass",
    registered_at: "timestamp with time zone",
    subject_column: "name",
  },
  "masq.vault": {
    kind: "text",
    pseudonym: "text",
    key_version: "integer",
    data_key_id: "uuid",
    nonce: "bytea",
    ciphertext: "bytea",
    created_at: "timestamp with time zone",
    suspect: "boolean",
    suspect_seq: "bigint?",
  },
  "masq.vault_epoch": {
    one: "boolean",
    epoch: "bigint",
  },
} as const;

/** How node-postgres hands each Postgres type to masq (int8 as text, dates as 'YYYY-MM-DD': pool.ts). */
interface PgTypes {
  text: string;
  uuid: string;
  regclass: string;
  date: string;
  bigint: string;
  integer: number;
  oid: number;
  boolean: boolean;
  bytea: Buffer;
  jsonb: unknown;
  "timestamp with time zone": Date;
  "text[]": string[];
  "bigint[]": string[];
  name: string;
}

type ColumnOf<S> = S extends `${infer T extends keyof PgTypes}?` ? PgTypes[T] | null : S extends keyof PgTypes ? PgTypes[S] : never;

/** kysely's view of masq's tables: `masqQueries(db).selectFrom("masq.quarantine")…` is typed by it (masqQueries below). */
export type Database = {
  -readonly [T in keyof typeof SCHEMA_TABLES]: { -readonly [C in keyof (typeof SCHEMA_TABLES)[T]]: ColumnType<ColumnOf<(typeof SCHEMA_TABLES)[T][C]>> };
};

const builders = new WeakMap<pg.Pool | pg.ClientBase, Kysely<Database>>();

/**
 * Typed queries on masq's own tables (lifecycle, status, quarantine, the demo's summary), on the pool of `db`, or on
 * one connected client (a pool's, checked out): inside `inTransaction`, the statements must run on the transaction's
 * own connection.
 * Kysely is loaded only by the commands that use it: importing it costs about 0.2 s, which `run` would pay at every
 * start for nothing. The pool or client stays the caller's: db.close() ends the pool, the caller releases the
 * client (kysely's release of it is a no-op), and the builder is never destroyed on its own.
 */
export function masqQueries(db: Db | pg.Pool | pg.ClientBase): Kysely<Database> {
  const on = "pool" in db && "target" in db ? db.pool : db;
  let k = builders.get(on);
  if (k === undefined) {
    k = new Kysely<Database>({ dialect: new PostgresDialect({ pool: "idleCount" in on ? on : heldClient(on) }) });
    builders.set(on, k);
  }
  return k;
}

/** A pool of one client already checked out by the caller: kysely runs every statement on it and never releases it. */
function heldClient(client: pg.ClientBase): PostgresPool {
  const held = { query: client.query.bind(client), release: () => undefined, processID: (client as { processID?: number }).processID } as unknown as PostgresPoolClient;
  return { connect: () => Promise.resolve(held), end: () => Promise.resolve(), options: {} };
}
