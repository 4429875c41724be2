import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { qualified, type TableName } from "../../src/db/tables.ts";
import { writeBatch } from "../../src/ingest/write-batch.ts";
import { batchLength, type SealedBatch } from "../../src/ingest/batch.ts";

/**
 * Postgres's own CPU per row for masq's batch statement, its parts, and cheaper shapes of those parts: an experiment,
 * not a schema change. Each variant writes the same presealed batches over one connection, one statement (one
 * transaction) per batch, on emptied tables; the CPU is the backend process's own (/proc/<pid>/schedstat: ns on CPU),
 * so the client, the network and other work on the machine do not count. Repeated, variants interleaved; medians.
 * Needs a Postgres on this machine (embedded, or DATABASE_URL on localhost); elsewhere every figure is null.
 */
export interface StatementCost {
  name: string;
  /** What the variant writes and how. */
  what: string;
  /** Backend CPU µs per message of the workload (median of the repetitions); null when it could not be read. */
  cpuUsPerMessage: number | null;
  runs: (number | null)[];
  /** Why the variant could not run (e.g. server-side COPY needs the server to read a file here). */
  error?: string;
}

export interface StatementCostResult {
  messages: number;
  batchSize: number;
  /** Vault rows the batches carry (each distinct pseudonym once): the vault variants' cost is per message, not per vault row. */
  vaultRows: number;
  variants: StatementCost[];
}

type Variant = { name: string; what: string; setup?: string; truncate: string; run: (pool: pg.Pool, b: SealedBatch, i: number) => Promise<unknown> };

const ROWS = `unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::date[])
  AS r(user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)`;
const COLUMNS = "user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date";

function rowArrays(b: SealedBatch): unknown[] {
  const r = b.rows;
  return [r.userId, r.deviceType, r.maskedIp, r.maskedDeviceId, r.locale, r.appVersion, r.createDate];
}

const vaultArrays = (b: SealedBatch) => [b.vault.map((v) => v.kind), b.vault.map((v) => v.pseudonym), b.vault.map((v) => v.dataKeyId), b.vault.map((v) => v.nonce), b.vault.map((v) => v.ciphertext)];

/** The ledger alone: claim every message id of the batch, insert-if-absent, as masq's statement does. */
const ledger = (table: string, cast: string) => async (pool: pg.Pool, b: SealedBatch) =>
  pool.query(`INSERT INTO ${table} (message_id, outcome) SELECT m::${cast}, 'written' FROM unnest($1::text[]) m ON CONFLICT (message_id) DO NOTHING`, [[...b.rows.messageId, ...b.quarantine.map((o) => o.messageId)]]);

/** The vault alone, as a plain statement into `table`, insert-if-absent. */
const vaultPlain = (table: string) => async (pool: pg.Pool, b: SealedBatch) =>
  pool.query(
    `INSERT INTO ${table} (kind, pseudonym, key_version, data_key_id, nonce, ciphertext)
     SELECT kind, pseudonym, $6, k, n, ct FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bytea[], $5::bytea[]) AS v(kind, pseudonym, k, n, ct)
     ON CONFLICT (kind, pseudonym) DO NOTHING`,
    [...vaultArrays(b), b.keyVersion],
  );

function variants(table: TableName, copyDir: string): Variant[] {
  const t = qualified(table);
  const masqTables = `${t}, masq.ingest_ledger, masq.quarantine, masq.vault`;
  const ledgerTable = (name: string, id: string, index: string) => ({
    setup: `DROP TABLE IF EXISTS masq_bench.${name}; CREATE TABLE masq_bench.${name} (message_id ${id} PRIMARY KEY, outcome text NOT NULL CHECK (outcome IN ('written', 'quarantined')), committed_at timestamptz NOT NULL DEFAULT now())${index ? `; CREATE INDEX ON masq_bench.${name} USING ${index}` : ""}`,
    truncate: `TRUNCATE masq_bench.${name}`,
  });
  return [
    { name: "masq", what: "masq's statement (writeBatch): ledger, rows, quarantine and vault", truncate: `TRUNCATE ${masqTables}`, run: (pool, b) => writeBatch(pool, table, b) },
    { name: "masq-no-vault", what: "masq's statement without vault rows", truncate: `TRUNCATE ${masqTables}`, run: (pool, b) => writeBatch(pool, table, { ...b, vault: [], vaultEpoch: null }) },
    { name: "unnest-insert", what: "the rows alone: a plain INSERT … SELECT FROM unnest", truncate: `TRUNCATE ${t}`, run: (pool, b) => pool.query(`INSERT INTO ${t} (${COLUMNS}) SELECT * FROM ${ROWS}`, rowArrays(b)) },
    {
      name: "copy",
      what: "the rows alone: COPY from a CSV file the server reads (server-side COPY; a client's COPY FROM STDIN parses the same)",
      truncate: `TRUNCATE ${t}`,
      run: (pool, _b, i) => pool.query(`COPY ${t} (${COLUMNS}) FROM '${path.join(copyDir, `${i}.csv`)}' WITH (FORMAT csv)`),
    },
    { name: "ledger-as-masq", what: "the ledger alone: text key (btree) + btree on committed_at, as masq.ingest_ledger was before it was partitioned", ...ledgerTable("ledger_text", "text", "btree (committed_at)"), run: ledger("masq_bench.ledger_text", "text") },
    {
      name: "ledger-partitioned",
      what: "the ledger alone as masq.ingest_ledger keeps it: partitioned by the day of SentTimestamp, (message_id, sent_day) key + btree on committed_at, the undated partition looked in",
      setup: `DROP TABLE IF EXISTS masq_bench.ledger_part;
        CREATE TABLE masq_bench.ledger_part (message_id text NOT NULL, outcome text NOT NULL CHECK (outcome IN ('written', 'quarantined')),
          committed_at timestamptz NOT NULL DEFAULT now(), sent_day date NOT NULL DEFAULT '-infinity', PRIMARY KEY (message_id, sent_day)) PARTITION BY RANGE (sent_day);
        CREATE INDEX ON masq_bench.ledger_part (committed_at);
        CREATE TABLE masq_bench.ledger_part_undated PARTITION OF masq_bench.ledger_part FOR VALUES FROM (MINVALUE) TO ('1970-01-01');
        CREATE TABLE masq_bench.ledger_part_default PARTITION OF masq_bench.ledger_part DEFAULT;
        CREATE TABLE masq_bench.ledger_part_today PARTITION OF masq_bench.ledger_part FOR VALUES FROM (current_date - 1) TO (current_date + 2)`,
      truncate: "TRUNCATE masq_bench.ledger_part",
      run: (pool, b) =>
        pool.query(
          `INSERT INTO masq_bench.ledger_part (message_id, outcome, sent_day) SELECT m, 'written', d FROM unnest($1::text[], $2::date[]) AS u(m, d)
           WHERE NOT EXISTS (SELECT 1 FROM masq_bench.ledger_part x WHERE x.sent_day = '-infinity' AND x.message_id = u.m)
           ON CONFLICT (message_id, sent_day) DO NOTHING`,
          [
            [...b.rows.messageId, ...b.quarantine.map((o) => o.messageId)],
            [...b.rows.sentAt.map((ms) => (ms === null ? "-infinity" : new Date(ms).toISOString().slice(0, 10))), ...b.quarantine.map((o) => (o.sentAt === null ? "-infinity" : o.sentAt.toISOString().slice(0, 10)))],
          ],
        ),
    },
    { name: "ledger-no-time-index", what: "the ledger alone: text key, no index on committed_at", ...ledgerTable("ledger_noidx", "text", ""), run: ledger("masq_bench.ledger_noidx", "text") },
    { name: "ledger-brin-time", what: "the ledger alone: text key + BRIN (not btree) on committed_at", ...ledgerTable("ledger_brin", "text", "brin (committed_at)"), run: ledger("masq_bench.ledger_brin", "text") },
    { name: "ledger-uuid", what: "the ledger alone: uuid key + btree on committed_at", ...ledgerTable("ledger_uuid", "uuid", "btree (committed_at)"), run: ledger("masq_bench.ledger_uuid", "uuid") },
    {
      name: "vault-as-masq",
      what: "the vault alone: masq.add_vault_values (plpgsql, key check, DISTINCT ON … ORDER BY, ON CONFLICT DO UPDATE … WHERE suspect)",
      truncate: "TRUNCATE masq.vault",
      run: (pool, b) => pool.query("SELECT masq.add_vault_values($1, $2, $3, $4, $5, $6)", [b.keyVersion, ...vaultArrays(b)]),
    },
    { name: "vault-do-nothing", what: "the vault alone: a plain INSERT … ON CONFLICT DO NOTHING into masq.vault (same foreign keys)", truncate: "TRUNCATE masq.vault", run: vaultPlain("masq.vault") },
    {
      name: "vault-no-fk",
      what: "the vault alone: the same into a copy of masq.vault without its foreign keys",
      setup: "DROP TABLE IF EXISTS masq_bench.vault; CREATE TABLE masq_bench.vault (LIKE masq.vault INCLUDING ALL)",
      truncate: "TRUNCATE masq_bench.vault",
      run: vaultPlain("masq_bench.vault"),
    },
  ];
}

/** CPU time of a process so far, ns (schedstat's first field); null off Linux or for a server elsewhere. */
function cpuNs(pid: number): number | null {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ")[0]);
  } catch {
    return null;
  }
}

const csv = (v: string | number | null) => (v === null ? "" : `"${String(v).replace(/"/g, '""')}"`);

/** The batches' rows as CSV files the server can read, for the COPY variant. */
function writeCopyFiles(dir: string, batches: readonly SealedBatch[]): void {
  batches.forEach((b, i) => {
    const r = b.rows;
    const lines = r.messageId.map((_, j) => [r.userId[j]!, r.deviceType[j]!, r.maskedIp[j]!, r.maskedDeviceId[j]!, r.locale[j]!, r.appVersion[j]!, r.createDate[j]!].map(csv).join(","));
    const file = path.join(dir, `${i}.csv`);
    writeFileSync(file, `${lines.join("\n")}\n`);
    chmodSync(file, 0o644);
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

/**
 * Runs every variant `repeat` times, interleaved, over the same presealed batches (from workload.ts's
 * presealedBatches, so the vault rows are those a fresh masq would write: each distinct value once).
 */
export async function measureStatementCost(
  databaseUrl: string,
  table: TableName,
  batches: readonly SealedBatch[],
  opts: { repeat: number; log: (line: string) => void; /** Postgres runs on this machine (else its backend's pid means nothing here). */ local: boolean },
): Promise<StatementCostResult> {
  const messages = batches.reduce((n, b) => n + batchLength(b), 0);
  const copyDir = mkdtempSync(path.join(tmpdir(), "masq-bench-copy-"));
  chmodSync(copyDir, 0o755);
  writeCopyFiles(copyDir, batches);
  // One connection (never idle-closed), so that one backend does all the work and its CPU is the statements'.
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 1, idleTimeoutMillis: 0 });
  const list = variants(table, copyDir);
  const runs = new Map<string, (number | null)[]>(list.map((v) => [v.name, []]));
  const errors = new Map<string, string>();
  try {
    await pool.query("CREATE SCHEMA IF NOT EXISTS masq_bench");
    for (const v of list) if (v.setup) await pool.query(v.setup);
    const backend = (await pool.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
    const cpu = () => (opts.local ? cpuNs(backend) : null);
    for (let rep = 0; rep < opts.repeat; rep++) {
      for (const v of list) {
        if (errors.has(v.name)) continue;
        try {
          await pool.query(v.truncate);
          // Every variant starts after a checkpoint, so each pays the same full-page writes (needs superuser or pg_checkpoint).
          await pool.query("CHECKPOINT").catch(() => undefined);
          const before = cpu();
          for (let i = 0; i < batches.length; i++) await v.run(pool, batches[i]!, i);
          const after = cpu();
          runs.get(v.name)!.push(before === null || after === null ? null : (after - before) / 1000 / messages);
        } catch (err) {
          errors.set(v.name, (err as Error).message);
          opts.log(`  Postgres statement cost: ${v.name} failed: ${(err as Error).message}`);
        }
      }
    }
    await pool.query(`DROP SCHEMA masq_bench CASCADE; TRUNCATE ${qualified(table)}, masq.ingest_ledger, masq.quarantine, masq.vault`);
  } finally {
    await pool.end();
    rmSync(copyDir, { recursive: true, force: true });
  }
  return {
    messages,
    batchSize: batches[0] === undefined ? 0 : batchLength(batches[0]),
    vaultRows: batches.reduce((n, b) => n + b.vault.length, 0),
    variants: list.map((v) => {
      const r = runs.get(v.name)!;
      const measured = r.filter((x): x is number => x !== null);
      return { name: v.name, what: v.what, cpuUsPerMessage: measured.length === 0 ? null : median(measured), runs: r, ...(errors.has(v.name) ? { error: errors.get(v.name)! } : {}) };
    }),
  };
}
