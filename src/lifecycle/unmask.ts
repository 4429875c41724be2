import { sql } from "kysely";
import type { Db } from "../db/pool.ts";
import { classified } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";
import { qualified, type TableName } from "../db/tables.ts";
import { FatalError, ConfigError } from "../errors.ts";
import type { Kind, Pseudonymizer } from "../ingest/pseudonymize.ts";
import { openAuditKey } from "../keys/audit-key.ts";
import { IntegrityError, open, vaultAad } from "../keys/data-keys.ts";
import { unwrapDataKeys } from "../keys/unwrap-data-keys.ts";
import type { KeyProvider } from "../keys/key-provider.ts";
import { activePseudonymKey, pseudonymKeyVersion } from "../keys/pseudonym-keys.ts";
import { flagSuspect, appendSealed } from "./audit.ts";
import type { Lifecycle } from "./audited-command.ts";

/**
 * `masq unmask` and `masq pseudonym`: the audited read of the vault (revealVault, also used by other reveals) and how
 * its values are printed.
 */

/** The kinds a bare pseudonym is looked up as when `--kind` names none: the login's. */
export const KINDS: readonly Kind[] = ["ip", "device_id"];

/** What `masq unmask` was asked for: pseudonyms, or the rows of the table by user id and/or date range. */
export interface Selector {
  pseudonyms: string[];
  userIds: string[];
  from: string | undefined;
  to: string | undefined;
  kinds: Kind[];
  /** No --kind was given: rows of the table are read for every kind of its pseudonym columns (the login's: `kinds`). */
  everyKind?: boolean;
  limit: number;
}

/**
 * `masq unmask`: the original values of the selected pseudonyms, read from the vault through the audited steps of
 * revealVault. Authorisation is the database's (only masq_unmask may call the reveal functions) and the master key's
 * (KMS Decrypt, encryption context purpose=vault). `notFound`: pseudonyms no kind of which the vault holds (empty
 * past the limit, where it is unknown).
 */
export async function unmask(
  lc: Lifecycle,
  req: { reason: string; selector: Selector; table: TableName; pseudonymKeyOverride: Uint8Array | undefined },
): Promise<RevealResult & { notFound: string[] }> {
  const { wanted, candidates } = await wantedPseudonyms(lc.db, req.table, req.selector);
  const r = await revealVault(lc.db, lc.keys(), {
    reason: req.reason,
    selector: describeSelector(req.selector),
    client: await lc.client(),
    wanted,
    candidates,
    limit: req.selector.limit,
    pseudonymKeyOverride: req.pseudonymKeyOverride,
  });
  // A bare pseudonym is looked up as each kind: it is missing only when no kind has it. Past the limit, unknown.
  const notFound = r.more ? [] : [...new Set(wanted.map((w) => w.pseudonym))].filter((p) => !r.found.has(p));
  return { ...r, notFound };
}

/**
 * `masq pseudonym <kind> <value>`: the pseudonym of a value an analyst holds, under the active key. The audit row
 * names the pseudonym (never the value) and commits before the pseudonym is returned.
 */
export async function pseudonymOf(lc: Lifecycle, req: { kind: Kind; value: string; reason: string; pseudonymKeyOverride: Uint8Array | undefined }): Promise<string> {
  const provider = lc.keys();
  const key = await activePseudonymKey(lc.db.pool, provider, req.pseudonymKeyOverride);
  const pseudonym = key.pseudonymizer.pseudonymize(req.kind, req.value);
  const auditKey = await openAuditKey(lc.db.pool, provider);
  try {
    const selector = JSON.stringify({ kind: req.kind, keyVersion: key.version });
    const client = JSON.stringify(await lc.client());
    const subjects = [`${req.kind}:${pseudonym}`];
    await appendSealed(lc.db.pool, auditKey, sql<{ seq: string }>`SELECT masq.audit_pseudonym(${req.reason}, ${selector}, ${client}, ${subjects}, ${auditKey.version})::text AS seq`);
  } finally {
    auditKey.key.fill(0);
  }
  return pseudonym;
}

/**
 * The registered columns that hold pseudonyms of `kind` ("schema.table.column"), of any treatment: a hash column's
 * values are the same HMAC, so `masq pseudonym` finds its rows too. masq_unmask reads the registry (106_contract_tables.sql).
 */
export async function tablesOfKind(db: Db, kind: Kind): Promise<string[]> {
  const { rows } = await classified(
    sql<{ column: string }>`SELECT c.relation::text || '.' || quote_ident(c.column_name) AS column FROM masq.target_pseudonym_columns c
       WHERE c.kind = ${kind} ORDER BY 1`.execute(masqQueries(db)),
  );
  return rows.map((r) => r.column);
}

function describeSelector(s: Selector): Record<string, unknown> {
  return {
    ...(s.pseudonyms.length > 0 ? { pseudonyms: s.pseudonyms.length } : {}),
    ...(s.userIds.length > 0 ? { userIds: s.userIds } : {}),
    ...(s.from ? { from: s.from } : {}),
    ...(s.to ? { to: s.to } : {}),
    kinds: s.kinds,
    limit: s.limit,
  };
}

/** The vault entries of the asked pairs: which data keys and pseudonym key versions their values need. */
type Candidates = { key_version: number; data_key_id: string }[];

/** Where a table keeps whom a row is about and its pseudonyms by kind (recoverable columns only: a hash has no value). */
interface TableLayout {
  subject: string;
  columns: { column: string; kind: Kind }[];
}

/** The login table's layout: also that of a table named but not registered, as unmask always read it. */
const LOGIN_LAYOUT: TableLayout = {
  subject: "user_id",
  columns: [
    { column: "masked_ip", kind: "ip" },
    { column: "masked_device_id", kind: "device_id" },
  ],
};

/** The table's subject column and recoverable pseudonym columns as registered (106_contract_tables.sql). */
async function tableLayout(db: Db, table: TableName): Promise<TableLayout> {
  const { rows } = await classified(
    sql<{ subject: string; column: string | null; kind: string | null }>`SELECT t.subject_column::text AS subject, c.column_name::text AS column, c.kind
       FROM masq.target_tables t LEFT JOIN masq.target_pseudonym_columns c ON c.relation = t.relation AND c.recoverable
       WHERE t.relation = to_regclass(${qualified(table)})
       ORDER BY c.column_name`.execute(masqQueries(db)),
  );
  if (rows.length === 0) return LOGIN_LAYOUT;
  const layout = { subject: rows[0]!.subject, columns: rows.flatMap((r) => (r.column === null || r.kind === null ? [] : [{ column: r.column, kind: r.kind }])) };
  // The login's, in the order its statement always had (which rows a --limit keeps depends on it).
  const key = (l: TableLayout) => JSON.stringify([l.subject, l.columns.map((c) => `${c.column}:${c.kind}`).sort()]);
  return key(layout) === key(LOGIN_LAYOUT) ? LOGIN_LAYOUT : layout;
}

/**
 * The (kind, pseudonym) pairs asked for: given directly, or those of the table's rows that match (by its subject
 * column, and its recoverable columns of the kinds asked). With a selector on the table, the same statement also
 * returns those pairs' vault entries (vaultEntries' step 0), one round trip instead of two.
 */
async function wantedPseudonyms(db: Db, table: TableName, s: Selector): Promise<{ wanted: { kind: Kind; pseudonym: string }[]; candidates: Candidates | undefined }> {
  const out: { kind: Kind; pseudonym: string }[] = [];
  // A bare pseudonym may be of either kind (they never collide): look it up as each kind asked for.
  for (const p of s.pseudonyms) for (const kind of s.kinds) out.push({ kind, pseudonym: p });
  if (s.userIds.length === 0 && s.from === undefined && s.to === undefined) return { wanted: out, candidates: undefined };
  const layout = await tableLayout(db, table);
  const userIds = s.userIds.length > 0 ? s.userIds : null;
  const from = s.from ?? null;
  const to = s.to ?? null;
  const givenKinds = out.map((w) => w.kind);
  const givenPseudonyms = out.map((w) => w.pseudonym);
  const cols = layout.columns.map((c) => sql.id(c.column));
  const picked = cols.length === 0 ? sql`NULL::text AS none` : sql.join(cols);
  const order = cols.length === 0 ? sql`1` : sql.join(cols);
  const rowKinds = s.everyKind === true ? [...new Set([...s.kinds, ...layout.columns.map((c) => c.kind)])] : s.kinds;
  const fromRows = layout.columns.map((c) => sql`UNION SELECT ${c.kind}::text, ${sql.id(c.column)}::text FROM t WHERE ${sql.id(c.column)} IS NOT NULL AND ${c.kind}::text = ANY(${rowKinds}::text[])`);
  const aggregates = layout.columns.map((c, i) => sql`, (SELECT coalesce(array_agg(${sql.id(c.column)}::text ORDER BY ${order}), '{}') FROM t) AS ${sql.id(`c${i}`)}`);
  const r = (
    await classified(
      sql<{ key_versions: number[]; data_key_ids: string[] } & Record<string, (string | null)[]>>`WITH t AS MATERIALIZED (
         SELECT DISTINCT ${picked} FROM ${sql.id(table.schema, table.name)}
         WHERE (${userIds}::text[] IS NULL OR ${sql.id(layout.subject)}::text = ANY(${userIds}::text[]))
           AND (${from}::date IS NULL OR create_date >= ${from}::date)
           AND (${to}::date IS NULL OR create_date <= ${to}::date)
         ORDER BY ${order}
         LIMIT ${s.limit + 1}
       ), w AS (
         SELECT g.kind, g.pseudonym FROM unnest(${givenKinds}::text[], ${givenPseudonyms}::text[]) AS g(kind, pseudonym)
         ${sql.join(fromRows, sql` `)}
       ), c AS (
         SELECT v.key_version, v.data_key_id FROM masq.vault v JOIN w ON v.kind = w.kind AND v.pseudonym = w.pseudonym
         ORDER BY v.kind, v.pseudonym LIMIT ${s.limit + 1}
       )
       SELECT (SELECT coalesce(array_agg(key_version), '{}') FROM c) AS key_versions,
              (SELECT coalesce(array_agg(data_key_id::text), '{}') FROM c) AS data_key_ids
              ${sql.join(aggregates, sql` `)}`.execute(masqQueries(db)),
    )
  ).rows[0]!;
  const seen = new Set(out.map((w) => `${w.kind}:${w.pseudonym}`));
  const rowCount = layout.columns.length === 0 ? 0 : r.c0!.length;
  for (let i = 0; i < rowCount; i++) {
    for (const [j, { kind }] of layout.columns.entries()) {
      const pseudonym = r[`c${j}`]![i] ?? null;
      if (pseudonym === null || !rowKinds.includes(kind) || seen.has(`${kind}:${pseudonym}`)) continue;
      seen.add(`${kind}:${pseudonym}`);
      out.push({ kind, pseudonym });
    }
  }
  return { wanted: out, candidates: r.key_versions.map((v, i) => ({ key_version: v, data_key_id: r.data_key_ids[i]! })) };
}

export interface RevealRequest {
  reason: string;
  /** What was asked, as the audit row records it. */
  selector: Record<string, unknown>;
  /** What the client says about itself (OS user, AWS caller), labelled client-reported in the row. */
  client: Record<string, unknown>;
  wanted: readonly { kind: Kind; pseudonym: string }[];
  /** The vault entries of `wanted` when already read (with the table's rows); else read here, step 0. */
  candidates?: Candidates | undefined;
  limit: number;
  /** MASQ_PSEUDONYM_KEY, for the check of values under a key given from outside. */
  pseudonymKeyOverride: Uint8Array | undefined;
}

export interface RevealResult {
  /** Values that decrypted and are their pseudonym's: safe to show. */
  values: Unmasked[];
  /** Values that decrypted but are not HMAC(key, kind:value) of their pseudonym: planted, withheld, marked suspect. */
  forged: { kind: Kind; pseudonym: string }[];
  found: Set<string>;
  more: boolean;
  auditSeq: string;
}

interface Cipher {
  kind: Kind;
  pseudonym: string;
  key_version: number;
  data_key_id: string;
  nonce: Buffer;
  ciphertext: Buffer;
}

/**
 * The audited read of the vault, in the order that makes the audit exact:
 *   0. the keys the asked values need (data keys, pseudonym keys, the audit key) are unwrapped first, so that a wrong
 *      master key stops here, before any audit row claims a value was revealed;
 *   1. one transaction: masq.audit_reveal_vault records which values the vault holds and hands out, the row is
 *      sealed with its MAC, COMMIT;
 *   2. masq.vault_ciphertexts hands out the ciphertexts that committed row names, and nothing else.
 * Every value is then checked against its pseudonym (HMAC of the pseudonym key of its version): a value planted under
 * a pseudonym that is not its own is withheld and flagged (with an audit row of its own), so that ingestion replaces
 * it with the true value.
 */
export async function revealVault(db: Db, provider: KeyProvider, req: RevealRequest): Promise<RevealResult> {
  const pool = db.pool;
  const candidates = req.candidates ?? (await vaultEntries(db, req.wanted, req.limit + 1));
  const dataKeys = await unwrapDataKeys(pool, provider, candidates.map((c) => c.data_key_id));
  const pseudonymizers = new Map<number, Pseudonymizer>();
  const auditKey = await openAuditKey(pool, provider);
  try {
    for (const v of new Set(candidates.map((c) => c.key_version))) {
      pseudonymizers.set(v, (await pseudonymKeyVersion(pool, provider, v, undefined, req.pseudonymKeyOverride)).pseudonymizer);
    }
    const kinds = req.wanted.map((w) => w.kind);
    const pseudonyms = req.wanted.map((w) => w.pseudonym);
    const { seq, more } = await appendSealed(
      pool,
      auditKey,
      sql<{ seq: string; more: boolean }>`SELECT seq::text AS seq, more
        FROM masq.audit_reveal_vault(${req.reason}, ${JSON.stringify(req.selector)}, ${JSON.stringify(req.client)}, ${kinds}, ${pseudonyms}, ${req.limit}, ${auditKey.version})`,
    );
    const { rows } = await classified(sql<Cipher>`SELECT kind, pseudonym, key_version, data_key_id, nonce, ciphertext FROM masq.vault_ciphertexts(${seq})`.execute(masqQueries(db)));
    // A rotation between step 0 and step 2 can move a value to a data key or pseudonym key not unwrapped yet.
    const lateKeys = rows.map((r) => r.data_key_id).filter((id) => !dataKeys.has(id));
    for (const [id, k] of await unwrapDataKeys(pool, provider, lateKeys)) dataKeys.set(id, k);
    for (const v of new Set(rows.map((r) => r.key_version))) {
      if (!pseudonymizers.has(v)) pseudonymizers.set(v, (await pseudonymKeyVersion(pool, provider, v, undefined, req.pseudonymKeyOverride)).pseudonymizer);
    }
    const values: Unmasked[] = [];
    const forged: { kind: Kind; pseudonym: string }[] = [];
    for (const r of rows) {
      const key = dataKeys.get(r.data_key_id);
      if (key === undefined) throw new FatalError(`the data key of ${r.kind} ${r.pseudonym} is missing from masq.data_keys`);
      let value: string;
      try {
        value = open(key, { nonce: r.nonce, ciphertext: r.ciphertext }, vaultAad(r.kind, r.pseudonym)).toString("utf8");
      } catch (err) {
        if (err instanceof IntegrityError) throw new IntegrityError(`the vault entry of ${r.kind} ${r.pseudonym} does not decrypt: it was altered, moved from another row, or its data key is not the one that sealed it`);
        throw err;
      }
      if (pseudonymizers.get(r.key_version)!.pseudonymize(r.kind, value) === r.pseudonym) values.push({ kind: r.kind, pseudonym: r.pseudonym, value });
      else forged.push({ kind: r.kind, pseudonym: r.pseudonym });
    }
    await flagSuspect(pool, auditKey, seq, null, forged);
    return { values, forged, found: new Set(rows.map((r) => r.pseudonym)), more, auditSeq: seq };
  } finally {
    auditKey.key.fill(0);
    for (const k of dataKeys.values()) k.fill(0);
  }
}

/** Step 0: the non-secret columns of the asked rows, to learn which keys they need. */
async function vaultEntries(db: Db, wanted: RevealRequest["wanted"], limit: number): Promise<Candidates> {
  if (wanted.length === 0) return [];
  const kinds = wanted.map((w) => w.kind);
  const pseudonyms = wanted.map((w) => w.pseudonym);
  const { rows } = await classified(
    sql<{ key_version: number; data_key_id: string }>`SELECT v.key_version, v.data_key_id FROM masq.vault v
      JOIN unnest(${kinds}::text[], ${pseudonyms}::text[]) AS w(kind, pseudonym) ON v.kind = w.kind AND v.pseudonym = w.pseudonym
      ORDER BY v.kind, v.pseudonym LIMIT ${limit}`.execute(masqQueries(db)),
  );
  return rows;
}

// Output: the recovered values as a table, CSV or JSON, safe to print to a terminal or open in a spreadsheet.

/** One recovered value, as `masq unmask` prints it. */
export interface Unmasked {
  kind: string;
  pseudonym: string;
  value: string;
}

export type UnmaskFormat = "table" | "csv" | "json";

export function formatUnmasked(rows: readonly Unmasked[], format: UnmaskFormat): string {
  if (format === "json") return `${JSON.stringify(rows, null, 2)}\n`;
  if (format === "csv") return ["kind,pseudonym,value", ...rows.map((r) => [r.kind, r.pseudonym, r.value].map(csvField).join(","))].join("\r\n") + "\r\n";
  const header = { kind: "kind", pseudonym: "pseudonym", value: "value" };
  const all = [header, ...rows];
  const kindWidth = Math.max(...all.map((r) => r.kind.length));
  const pseudonymWidth = Math.max(...all.map((r) => r.pseudonym.length));
  return all.map((r) => `${r.kind.padEnd(kindWidth)}  ${r.pseudonym.padEnd(pseudonymWidth)}  ${printable(r.value)}`).join("\n") + "\n";
}

/**
 * RFC 4180: a field with a comma or quote is quoted, and its quotes doubled. Control characters (C0 and C1, CR and
 * LF included) are written escaped as \uXXXX, as in the table: a CSV printed to a terminal must not act on ESC or
 * BEL. A value that a spreadsheet would run as a formula (it starts with = + - @, tab or CR; a device id is
 * arbitrary text) gets a leading ' (OWASP's advice against CSV injection); --format json gives every value exactly.
 */
export function csvField(value: string): string {
  const safe = printable(/^[=+\-@\t\r]/.test(value) ? `'${value}` : value);
  return /[",]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

/** In the table, control characters (C0 and C1: a terminal would act on ESC and CSI) in a value (a device id is arbitrary text) are shown escaped, not interpreted. */
export function printable(value: string): string {
  // eslint-disable-next-line no-control-regex
  return value.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** --format of unmask and subject export. */
export function readFormat(flags: Record<string, unknown>): UnmaskFormat {
  const f = typeof flags.format === "string" ? flags.format : "table";
  if (f !== "table" && f !== "csv" && f !== "json") throw new ConfigError("--format", "must be table, csv or json", { what: "unknown format" });
  return f;
}
