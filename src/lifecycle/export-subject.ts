import { sql } from "kysely";
import type pg from "pg";
import { FatalError, ConfigError } from "../errors.ts";
import type { Kind, Pseudonymizer } from "../ingest/pseudonymize.ts";
import { registeredTables } from "../db/registered-tables.ts";
import { qualified, type TableName } from "../db/tables.ts";
import { decodeAppVersion, MAX_APP_VERSION } from "../ingest/login-event.ts";
import { IntegrityError, open, quarantineBodyAad, vaultAad } from "../keys/data-keys.ts";
import { unwrapDataKeys } from "../keys/unwrap-data-keys.ts";
import type { ExportedContractRow, ExportedMaskedRow, ExportedQuarantined, ExportedRow, ExportLine } from "./export-output.ts";
import type { KeyProvider } from "../keys/key-provider.ts";
import { pseudonymKeyVersion } from "../keys/pseudonym-keys.ts";
import { readTable } from "../settings/config.ts";
import { classified, connect } from "../db/query.ts";
import { masqQueries } from "../db/schema.ts";
import { openAuditKey, subjectFingerprint } from "../keys/audit-key.ts";
import type { Lifecycle } from "./audited-command.ts";
import { appendSealed, flagSuspect } from "./audit.ts";

export interface SubjectRequest {
  reason: string;
  client: Record<string, unknown>;
  userId: string;
  table: TableName;
  from: string | undefined;
  to: string | undefined;
  /** Rows fetched, decrypted and handed to `emit` at a time. */
  pageSize: number;
  pseudonymKeyOverride: Uint8Array | undefined;
  /**
   * Whether to show the user's quarantine records (default true). They are not any one table's: an export over
   * several tables shows them with the first.
   */
  withQuarantine?: boolean;
  /** Called once the audit row has committed, before anything is emitted. */
  audited?: (auditSeq: string) => void;
}

export interface SubjectResult {
  auditSeq: string;
  /** What the audit row records, counted by the server when it was written. */
  recorded: { rows: number; values: number; quarantined: number };
  rows: number;
  quarantined: number;
  pages: number;
  /** Values that decrypted but are not their pseudonym's (planted): withheld, marked suspect. */
  forged: { kind: Kind; pseudonym: string }[];
}

interface CipherRow extends CipherValues {
  user_id: string;
  device_type: string | null;
  masked_ip: string | null;
  masked_device_id: string | null;
  locale: string | null;
  app_version: string | null;
  create_date: string | null;
}

/** A row of a table of another layout than the login's (masq.subject_export_rows, 106_contract_tables.sql). */
interface CipherContractRow {
  user_id: string;
  create_date: string | null;
  row_json: Record<string, unknown>;
  vault_values: (VaultValueJson & { column: string })[];
}

/** The vault columns of a row's ip and device_id (NULL where the vault has none). */
interface CipherValues {
  ip_key_version: number | null;
  ip_data_key_id: string | null;
  ip_nonce: Buffer | null;
  ip_ciphertext: Buffer | null;
  device_key_version: number | null;
  device_data_key_id: string | null;
  device_nonce: Buffer | null;
  device_ciphertext: Buffer | null;
}

interface CipherQuarantined extends CipherValues {
  message_id: string;
  reason: string;
  received_at: Date;
  replayed_at: Date | null;
  body_data_key_id: string | null;
  body_nonce: Buffer | null;
  body_ciphertext: Buffer | null;
  /** A db_rejected record's copy: the masked row the table refused (LoginRow's keys), whose values are in the vault. */
  masked_row: Record<string, unknown> | null;
  /** A contract's db_rejected record: its pseudonyms' vault entries (null for any other record). */
  vault_values: VaultValueJson[] | null;
}

/** A vault entry as masq.subject_export_rows and subject_export_quarantine hand it out in jsonb (106_contract_tables.sql). */
interface VaultValueJson {
  kind: Kind;
  pseudonym: string | null;
  key_version: number | null;
  data_key_id: string | null;
  nonce: string | null;
  ciphertext: string | null;
}

/**
 * Everything masq holds about one user, audited like an unmask (lifecycle/unmask.ts) and streamed:
 *   0. the audit key is unwrapped (a wrong master key stops here, with nothing recorded) and names the user by its
 *      fingerprint, never by the id;
 *   1. one transaction: masq.audit_subject_export counts the user's rows, values and quarantine records, appends the
 *      row (who, when, why, the fingerprint, from/to, the counts), the row is sealed, COMMIT;
 *   2. one read-only transaction: masq.subject_export_rows and masq.subject_export_quarantine open cursors over that
 *      user's rows and quarantine records (the database serves only the user id the committed row was written for,
 *      from a table masq writes), fetched a page at a time; a db_rejected record comes with the masked row the table
 *      refused and its values. A page's data keys are unwrapped in one batch, each key once per export; each value is checked against
 *      its pseudonym as unmask does, and the page is handed to `emit` before the next one is read.
 */
export async function revealSubject(pool: pg.Pool, provider: KeyProvider, req: SubjectRequest, emit: (lines: ExportLine[]) => Promise<void>): Promise<SubjectResult> {
  const auditKey = await openAuditKey(pool, provider);
  const dataKeys = new Map<string, Uint8Array>();
  try {
    const fingerprint = subjectFingerprint(auditKey, req.userId);
    const selector = JSON.stringify({ subject: fingerprint });
    const step1 = await appendSealed(
      pool,
      auditKey,
      sql<{ seq: string; row_count: string; value_count: string; quarantined: string }>`SELECT seq::text AS seq, row_count, value_count, quarantined
        FROM masq.audit_subject_export(${req.reason}, ${selector}, ${JSON.stringify(req.client)}, ${req.userId}, ${fingerprint}, ${qualified(req.table)}::regclass,
          ${req.from ?? null}::date, ${req.to ?? null}::date, ${auditKey.version})`,
    );
    req.audited?.(step1.seq);
    const result: SubjectResult = {
      auditSeq: step1.seq,
      recorded: { rows: Number(step1.row_count), values: Number(step1.value_count), quarantined: Number(step1.quarantined) },
      rows: 0,
      quarantined: 0,
      pages: 0,
      forged: [],
    };
    const pseudonymizers = new Map<number, Pseudonymizer>();
    const keysFor = async (ids: (string | null)[]) => {
      const missing = [...new Set(ids.filter((id): id is string => id !== null && !dataKeys.has(id)))];
      for (const [id, k] of await unwrapDataKeys(pool, provider, missing)) dataKeys.set(id, k);
    };
    const pseudonymizerOf = async (version: number) => {
      let p = pseudonymizers.get(version);
      if (p === undefined) pseudonymizers.set(version, (p = (await pseudonymKeyVersion(pool, provider, version, undefined, req.pseudonymKeyOverride)).pseudonymizer));
      return p;
    };
    const client = await connect(pool);
    const tx = masqQueries(client);
    try {
      await classified(sql`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`.execute(tx));
      const rowsCursor = (await classified(sql<{ c: string }>`SELECT masq.subject_export_rows(${step1.seq}, ${req.userId}) AS c`.execute(tx))).rows[0]!.c;
      // Each value is opened and checked once per page (a user's rows share values); a forged one is withheld.
      let opened = new Map<string, string | null>();
      const reveal = async (kind: Kind, pseudonym: string | null, version: number | null, keyId: string | null, nonce: Buffer | null, ciphertext: Buffer | null) => {
        if (pseudonym === null || version === null || keyId === null || nonce === null || ciphertext === null) return null;
        const id = `${kind}:${pseudonym}`;
        if (opened.has(id)) return opened.get(id)!;
        const value = openValue(dataKeys, kind, pseudonym, keyId, nonce, ciphertext);
        const own = (await pseudonymizerOf(version)).pseudonymize(kind, value) === pseudonym;
        if (!own) result.forged.push({ kind, pseudonym });
        opened.set(id, own ? value : null);
        return own ? value : null;
      };
      const revealJson = (v: VaultValueJson) => reveal(v.kind, v.pseudonym, v.key_version, v.data_key_id, base64(v.nonce), base64(v.ciphertext));
      const values = async (c: CipherValues, maskedIp: string | null, maskedDeviceId: string | null) => ({
        ip: await reveal("ip", maskedIp, c.ip_key_version, c.ip_data_key_id, c.ip_nonce, c.ip_ciphertext),
        device_id: await reveal("device_id", maskedDeviceId, c.device_key_version, c.device_data_key_id, c.device_nonce, c.device_ciphertext),
      });
      for (;;) {
        const page = (await classified(sql<CipherRow | CipherContractRow>`FETCH ${sql.raw(String(req.pageSize))} FROM ${sql.id(rowsCursor)}`.execute(tx))).rows;
        if (page.length === 0) break;
        await keysFor(page.flatMap((r) => ("row_json" in r ? r.vault_values.map((v) => v.data_key_id) : [r.ip_data_key_id, r.device_data_key_id])));
        opened = new Map();
        const lines: (ExportedRow | ExportedContractRow)[] = [];
        for (const r of page) {
          if ("row_json" in r) {
            const values: Record<string, string | null> = {};
            for (const v of r.vault_values) values[v.column] = await revealJson(v);
            lines.push({ source: "contract_row", table: `${req.table.schema}.${req.table.name}`, user_id: r.user_id, create_date: r.create_date, columns: r.row_json, values });
            continue;
          }
          const { ip, device_id } = await values(r, r.masked_ip, r.masked_device_id);
          lines.push({
            source: "row",
            user_id: r.user_id,
            create_date: r.create_date,
            device_type: r.device_type,
            locale: r.locale,
            app_version: r.app_version === null ? null : versionText(Number(r.app_version)),
            masked_ip: r.masked_ip,
            ip,
            masked_device_id: r.masked_device_id,
            device_id,
          });
        }
        result.rows += lines.length;
        result.pages++;
        await emit(lines);
      }
      const quarantineCursor = (await classified(sql<{ c: string }>`SELECT masq.subject_export_quarantine(${step1.seq}, ${req.userId}) AS c`.execute(tx))).rows[0]!.c;
      for (;;) {
        if (req.withQuarantine === false) break;
        // Originals can be large (up to the SQS limit): a smaller page.
        const page = (await classified(sql<CipherQuarantined>`FETCH ${sql.raw(String(Math.max(1, Math.floor(req.pageSize / 10))))} FROM ${sql.id(quarantineCursor)}`.execute(tx))).rows;
        if (page.length === 0) break;
        await keysFor(page.flatMap((r) => [r.body_data_key_id, r.ip_data_key_id, r.device_data_key_id, ...(r.vault_values ?? []).map((v) => v.data_key_id)]));
        opened = new Map();
        const lines: ExportedQuarantined[] = [];
        for (const r of page) {
          const line: ExportedQuarantined = {
            source: "quarantined",
            user_id: req.userId,
            message_id: r.message_id,
            reason: r.reason,
            received_at: r.received_at.toISOString(),
            replayed_at: r.replayed_at?.toISOString() ?? null,
            original: r.body_data_key_id === null || r.body_nonce === null || r.body_ciphertext === null ? null : openBody(dataKeys, r.message_id, r.body_data_key_id, r.body_nonce, r.body_ciphertext),
            masked_row: r.masked_row === null || r.vault_values !== null ? null : await maskedRow(r, r.masked_row, values),
          };
          if (r.vault_values !== null) {
            line.row = r.masked_row;
            line.values = [];
            for (const v of r.vault_values) line.values.push({ kind: v.kind, pseudonym: v.pseudonym ?? "", value: await revealJson(v) });
          }
          lines.push(line);
        }
        result.quarantined += lines.length;
        result.pages++;
        await emit(lines);
      }
      await classified(sql`COMMIT`.execute(tx));
    } catch (err) {
      await sql`ROLLBACK`.execute(tx).catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
    await flagSuspect(pool, auditKey, step1.seq, req.userId, result.forged);
    return result;
  } finally {
    auditKey.key.fill(0);
    for (const k of dataKeys.values()) k.fill(0);
  }
}

const base64 = (x: string | null) => (x === null ? null : Buffer.from(x, "base64"));

/** The stored integer as the version text it encodes; one that masq did not write (out of range) as the number. */
function versionText(v: number): string {
  return Number.isInteger(v) && v >= 0 && v <= MAX_APP_VERSION ? decodeAppVersion(v) : String(v);
}

/** A db_rejected record's masked row (LoginRow, as commit-batch.ts kept it) with its values; a key of another type shows as missing. */
async function maskedRow(c: CipherValues, row: Record<string, unknown>, values: (c: CipherValues, ip: string | null, deviceId: string | null) => Promise<{ ip: string | null; device_id: string | null }>): Promise<ExportedMaskedRow> {
  const text = (v: unknown) => (typeof v === "string" ? v : null);
  const maskedIp = text(row.maskedIp);
  const maskedDeviceId = text(row.maskedDeviceId);
  const { ip, device_id } = await values(c, maskedIp, maskedDeviceId);
  return {
    create_date: text(row.createDate),
    device_type: text(row.deviceType),
    locale: text(row.locale),
    app_version: typeof row.appVersion === "number" ? versionText(row.appVersion) : null,
    masked_ip: maskedIp,
    ip,
    masked_device_id: maskedDeviceId,
    device_id,
  };
}

function openValue(keys: Map<string, Uint8Array>, kind: Kind, pseudonym: string, keyId: string, nonce: Buffer, ciphertext: Buffer): string {
  const key = keys.get(keyId);
  if (key === undefined) throw new FatalError(`the data key of ${kind} ${pseudonym} is missing from masq.data_keys`);
  try {
    return open(key, { nonce, ciphertext }, vaultAad(kind, pseudonym)).toString("utf8");
  } catch (err) {
    if (err instanceof IntegrityError) throw new IntegrityError(`the vault entry of ${kind} ${pseudonym} does not decrypt: it was altered, moved from another row, or its data key is not the one that sealed it`);
    throw err;
  }
}

function openBody(keys: Map<string, Uint8Array>, messageId: string, keyId: string, nonce: Buffer, ciphertext: Buffer): string {
  const key = keys.get(keyId);
  if (key === undefined) throw new FatalError(`the data key of quarantined message ${messageId} is missing from masq.data_keys`);
  try {
    return open(key, { nonce, ciphertext }, quarantineBodyAad(messageId)).toString("utf8");
  } catch (err) {
    if (err instanceof IntegrityError) throw new IntegrityError(`the original of quarantined message ${messageId} does not decrypt: it was altered or moved from another record`);
    throw err;
  }
}

/** What `masq subject export` asks: whose data, from the one table named or (undefined) every registered one. */
export interface ExportUserRequest {
  userId: string;
  named: TableName | undefined;
  /** The setting that named the table (--table or MASQ_TABLE), for the error when it is not one masq writes. */
  tableSetting: string;
  from: string | undefined;
  to: string | undefined;
  pageSize: number;
  reason: string;
  pseudonymKeyOverride: Uint8Array | undefined;
}

/** What the command is told as the export goes, table by table, to print it. */
export interface ExportUserReport {
  /** A table masq writes that this login may not read: the export is incomplete without it. */
  unreadable: (table: TableName) => void;
  /** A table's audit row has committed: its lines may be shown now. */
  audited: (auditSeq: string) => void;
  /** `tables`: how many tables the export covers (more than one: each summary names its table). */
  exported: (table: TableName, result: SubjectResult, withQuarantine: boolean, tables: number) => void;
}

/**
 * `masq subject export`: everything masq holds about one user (GDPR Art. 15), from every registered table this login
 * may read (or the one named), one audited reveal per table (revealSubject); the user's quarantine records come with
 * the first table. `emit` gets the lines page by page. Returns the values withheld because they are not their
 * pseudonym's.
 */
export async function exportUser(lc: Lifecycle, req: ExportUserRequest, emit: (lines: ExportLine[]) => Promise<void>, report: ExportUserReport): Promise<SubjectResult["forged"]> {
  const pool = lc.db.pool;
  const registered = req.named !== undefined ? [] : await registeredTables(pool);
  const tables: TableName[] = req.named !== undefined ? [req.named] : registered.filter((t) => t.readable);
  if (tables.length === 0) tables.push(readTable({ flags: {}, env: {} }));
  for (const t of registered.filter((x) => !x.readable)) report.unreadable(t);
  const forged: SubjectResult["forged"] = [];
  const provider = lc.keys();
  const client = await lc.client();
  for (const [i, table] of tables.entries()) {
    const r = await revealSubject(pool, provider, { ...req, client, table, withQuarantine: i === 0, audited: report.audited }, emit).catch((err: unknown) => {
      // The export reads only a table masq writes (registered: 102_ingest.sql), never one a login names at will.
      if (err instanceof Error && /is not a table masq writes/.test(err.message)) {
        throw new ConfigError(req.tableSetting, `${qualified(table)} is not a table masq writes`, {
          what: "not masq's table",
          hint: `run masq migrate as the table's owner with ${req.tableSetting} set to it, then export again`,
        });
      }
      throw err;
    });
    report.exported(table, r, i === 0, tables.length);
    forged.push(...r.forged);
  }
  return forged;
}
