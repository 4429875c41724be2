import { readFileSync } from "node:fs";
import { userInfo } from "node:os";
import type pg from "pg";
import { databaseSetting, readConnectTimeoutMs, readDatabaseUrl, readKeyConfig, readPseudonymKey, readTable } from "../config.ts";
import { ConfigError, describeError, errorLine, exitCodeFor, FatalError } from "../errors.ts";
import { fromPostgres } from "../sink/pg-errors.ts";
import type { PgTarget } from "../sink/pg-target.ts";
import { waitForPostgres } from "../sink/wait-for-postgres.ts";
import type { PiiKind } from "../mask/pseudonymize.ts";
import { createDb, type Db } from "../sink/db.ts";
import { inTransaction } from "../sink/transaction.ts";
import { qualified } from "../sink/table-name.ts";
import { canonicalizeIp } from "../transform/ip.ts";
import { IntegrityError, open } from "../vault/aead.ts";
import { loadDataKeys } from "../vault/data-keys.ts";
import type { KeyProvider } from "../vault/key-provider.ts";
import { createKeyProvider } from "../vault/key-provider-from-config.ts";
import { activePseudonymKey } from "../vault/pseudonym-keys.ts";
import { vaultAad, type VaultRow } from "../vault/vault-aad.ts";
import { formatUnmasked, type UnmaskFormat, type Unmasked } from "../vault/unmask-output.ts";

const KINDS: readonly PiiKind[] = ["ip", "device_id"];

interface Selector {
  pseudonyms: string[];
  userIds: string[];
  from: string | undefined;
  to: string | undefined;
  kinds: PiiKind[];
  limit: number;
}

/**
 * `masq unmask --reason "…"`: recovers original values from the vault, by pseudonym or by rows of the target table.
 * The audit record (who, when, why, which pseudonyms, how many) is written in the same transaction that reads the
 * vault, and nothing is decrypted or shown unless that transaction commits. Authorisation is the database's (only
 * masq_unmask may read the vault) and the master key's (KMS Decrypt, encryption context purpose=vault).
 */
export async function unmaskCommand(flags: Record<string, unknown>): Promise<number> {
  const reason = readReason(flags);
  const selector = readSelector(flags);
  const format = readFormat(flags);
  const table = readTable(flags, process.env);
  return withVault(flags, async ({ db, provider, awsIdentity }) => {
    const { rows, notFound, truncated } = await inTransaction(db.pool, async (client) => {
      const wanted = await wantedPseudonyms(client, table, selector);
      // One more than the limit, to tell "that is all" from "there is more".
      const read = await readVault(client, wanted, selector.limit + 1);
      const truncated = read.length > selector.limit;
      const rows = truncated ? read.slice(0, selector.limit) : read;
      await writeAudit(client, {
        command: "unmask",
        awsIdentity,
        reason,
        selector: describeSelector(selector),
        pseudonyms: rows.map((r) => r.pseudonym),
      });
      // A bare pseudonym is looked up as each kind: it is missing only when no kind has it. Past the limit, unknown.
      const found = new Set(rows.map((r) => r.pseudonym));
      const notFound = truncated ? [] : [...new Set(wanted.map((w) => w.pseudonym))].filter((p) => !found.has(p));
      return { rows, notFound, truncated };
    });
    // Decrypt everything before printing anything: a value that fails authentication stops the command whole.
    const values = await decryptAll(db.pool, provider, rows);
    if (notFound.length > 0) process.stderr.write(`masq: not in the vault (${notFound.length}): ${notFound.join(", ")}\n`);
    if (truncated) process.stderr.write(`masq: more values match; showing the first ${selector.limit} (raise --limit for more)\n`);
    process.stdout.write(formatUnmasked(values, format));
  });
}

/**
 * `masq pseudonym <kind> <value> --reason "…"`: the pseudonym of a value an analyst holds, to find its rows. The
 * value is canonicalised as ingestion does (an IP address in RFC 5952 form); it is never printed or logged; the audit
 * record names the pseudonym, and is written before the pseudonym is shown.
 */
export async function pseudonymCommand(kind: string, valueArg: string, flags: Record<string, unknown>): Promise<number> {
  const reason = readReason(flags);
  if (!KINDS.includes(kind as PiiKind)) throw new ConfigError("<kind>", "must be ip or device_id (the kind comes first: masq pseudonym <kind> <value>)", { what: "unknown kind" });
  const raw = valueArg === "-" ? readFileSync(0, "utf8").replace(/\r?\n$/, "") : valueArg;
  let value = raw;
  if (kind === "ip") {
    const canonical = canonicalizeIp(raw.trim());
    if (canonical === null) throw new ConfigError("<value>", "is not a valid IP address");
    value = canonical;
  }
  if (value === "") throw new ConfigError("<value>", "is empty");
  return withVault(flags, async ({ db, provider, awsIdentity }) => {
    const key = await activePseudonymKey(db.pool, provider, readPseudonymKey(process.env));
    const pseudonym = key.pseudonymizer.pseudonymize(kind as PiiKind, value);
    await inTransaction(db.pool, (client) =>
      writeAudit(client, { command: "pseudonym", awsIdentity, reason, selector: { kind, keyVersion: key.version }, pseudonyms: [pseudonym] }),
    );
    process.stdout.write(`${pseudonym}\n`);
  });
}

/**
 * Opens the key provider and the database for one audited command, learns the AWS caller (with KMS), runs `work`,
 * and closes both; exit 0, or the refusal's code and message with nothing shown.
 */
async function withVault(
  flags: Record<string, unknown>,
  work: (ctx: { db: Db; provider: KeyProvider; awsIdentity: string | undefined }) => Promise<void>,
): Promise<number> {
  const provider = createKeyProvider(readKeyConfig(process.env));
  const connectTimeoutMs = readConnectTimeoutMs(process.env);
  const db = createDb({ databaseUrl: readDatabaseUrl(flags, process.env), setting: databaseSetting(flags, process.env), connectTimeoutMs, poolSize: 2 });
  try {
    await waitForPostgres(db, { deadlineMs: connectTimeoutMs });
    await work({ db, provider, awsIdentity: await callerIdentity(provider) });
    return 0;
  } catch (err) {
    return refuse(err, db.target);
  } finally {
    provider.close();
    await db.close().catch(() => undefined);
  }
}

/** Letters, digits, punctuation and symbols: what a reader of the audit can see (not spaces, zero-width or controls). */
const VISIBLE = /[\p{L}\p{N}\p{P}\p{S}]/gu;
const MIN_VISIBLE = 3;

export function readReason(flags: Record<string, unknown>): string {
  const given = typeof flags.reason === "string" ? flags.reason.trim() : "";
  const visible = given.match(VISIBLE)?.length ?? 0;
  if (given === "") throw new ConfigError("--reason", 'is required: say why, e.g. --reason "fraud case 4711"; it goes into the audit record', { what: "no justification" });
  if (visible < MIN_VISIBLE) {
    throw new ConfigError(
      "--reason",
      `is too short: it has ${visible} visible character(s), at least ${MIN_VISIBLE} are needed; say why, e.g. --reason "fraud case 4711"`,
      { what: "justification too short" },
    );
  }
  return given;
}

function readSelector(flags: Record<string, unknown>): Selector {
  const list = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : typeof v === "string" ? [v] : []);
  const pseudonyms = list(flags.pseudonym).map((p) => p.trim().toLowerCase().replace(/^hmac:/, ""));
  // What was typed is never echoed: a value pasted by mistake (an ip, a device id) is PII.
  pseudonyms.forEach((p, i) => {
    if (!/^[0-9a-f]{64}$/.test(p)) {
      throw new ConfigError("--pseudonym", `must be 64 hex digits, as in masked_ip and masked_device_id; pseudonym ${i + 1} of ${pseudonyms.length} is ${p.length} characters long and not one`, {
        what: "not a pseudonym",
        hint: "to find the pseudonym of a value you hold, use masq pseudonym <kind> -",
      });
    }
  });
  const userIds = list(flags.userId);
  const date = (name: string, v: unknown): string | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(v) || Number.isNaN(Date.parse(`${v}T00:00:00Z`))) throw new ConfigError(name, "must be a date, YYYY-MM-DD");
    return v;
  };
  const from = date("--from", flags.from);
  const to = date("--to", flags.to);
  if (pseudonyms.length === 0 && userIds.length === 0 && from === undefined && to === undefined) {
    throw new ConfigError("--pseudonym/--user-id/--from/--to", "say what to unmask: pseudonyms, or rows of the table by user id and/or date range");
  }
  const kind = typeof flags.kind === "string" ? flags.kind : undefined;
  if (kind !== undefined && !KINDS.includes(kind as PiiKind)) throw new ConfigError("--kind", "must be ip or device_id", { what: "unknown kind" });
  const limit = typeof flags.limit === "number" ? flags.limit : 1000;
  return { pseudonyms, userIds, from, to, kinds: kind === undefined ? [...KINDS] : [kind as PiiKind], limit };
}

function readFormat(flags: Record<string, unknown>): UnmaskFormat {
  const f = typeof flags.format === "string" ? flags.format : "table";
  if (f !== "table" && f !== "csv" && f !== "json") throw new ConfigError("--format", "must be table, csv or json", { what: "unknown format" });
  return f;
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

/** The (kind, pseudonym) pairs asked for: given directly, or those of the table's rows that match. */
async function wantedPseudonyms(client: pg.PoolClient, table: { schema: string; name: string }, s: Selector): Promise<{ kind: PiiKind; pseudonym: string }[]> {
  const out: { kind: PiiKind; pseudonym: string }[] = [];
  // A bare pseudonym may be of either kind (they never collide): look it up as each kind asked for.
  for (const p of s.pseudonyms) for (const kind of s.kinds) out.push({ kind, pseudonym: p });
  if (s.userIds.length > 0 || s.from !== undefined || s.to !== undefined) {
    const { rows } = await client.query<{ masked_ip: string | null; masked_device_id: string | null }>(
      `SELECT DISTINCT masked_ip, masked_device_id FROM ${qualified(table)}
       WHERE ($1::text[] IS NULL OR user_id = ANY($1::text[]))
         AND ($2::date IS NULL OR create_date >= $2::date)
         AND ($3::date IS NULL OR create_date <= $3::date)
       ORDER BY masked_ip, masked_device_id
       LIMIT $4`,
      [s.userIds.length > 0 ? s.userIds : null, s.from ?? null, s.to ?? null, s.limit + 1],
    );
    const seen = new Set(out.map((w) => `${w.kind}:${w.pseudonym}`));
    for (const r of rows) {
      for (const [kind, pseudonym] of [["ip", r.masked_ip], ["device_id", r.masked_device_id]] as const) {
        if (pseudonym === null || !s.kinds.includes(kind) || seen.has(`${kind}:${pseudonym}`)) continue;
        seen.add(`${kind}:${pseudonym}`);
        out.push({ kind, pseudonym });
      }
    }
  }
  return out;
}

async function readVault(client: pg.PoolClient, wanted: readonly { kind: PiiKind; pseudonym: string }[], limit: number): Promise<VaultRow[]> {
  if (wanted.length === 0) return [];
  const { rows } = await client.query<VaultRow>(
    `SELECT v.kind, v.pseudonym, v.data_key_id, v.nonce, v.ciphertext
     FROM masq.vault v JOIN unnest($1::text[], $2::text[]) AS w(kind, pseudonym) ON v.kind = w.kind AND v.pseudonym = w.pseudonym
     ORDER BY v.kind, v.pseudonym LIMIT $3`,
    [wanted.map((w) => w.kind), wanted.map((w) => w.pseudonym), limit],
  );
  return rows;
}

async function writeAudit(
  client: pg.PoolClient,
  a: { command: "unmask" | "pseudonym"; awsIdentity: string | undefined; reason: string; selector: Record<string, unknown>; pseudonyms: string[] },
): Promise<void> {
  try {
    await client.query(
      `INSERT INTO masq.unmask_audit (command, aws_identity, os_user, reason, selector, pseudonyms, value_count)
       VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [a.command, a.awsIdentity ?? null, osUser(), a.reason, JSON.stringify(a.selector), a.pseudonyms, a.pseudonyms.length],
    );
  } catch (err) {
    throw new AuditError(err instanceof Error ? err.message : String(err));
  }
}

class AuditError extends Error {
  override name = "AuditError";
}

async function decryptAll(pool: pg.Pool, provider: KeyProvider, rows: readonly VaultRow[]): Promise<Unmasked[]> {
  const keys = await loadDataKeys(pool, provider, rows.map((r) => r.data_key_id));
  try {
    return rows.map((r) => {
      const key = keys.get(r.data_key_id);
      if (key === undefined) throw new FatalError(`the data key of ${r.kind} ${r.pseudonym} is missing from masq.data_keys`);
      try {
        return { kind: r.kind, pseudonym: r.pseudonym, value: open(key, { nonce: r.nonce, ciphertext: r.ciphertext }, vaultAad(r.kind, r.pseudonym)).toString("utf8") };
      } catch (err) {
        if (err instanceof IntegrityError) throw new IntegrityError(`the vault entry of ${r.kind} ${r.pseudonym} does not decrypt: it was altered, moved from another row, or its data key is not the one that sealed it`);
        throw err;
      }
    });
  } finally {
    for (const k of keys.values()) k.fill(0);
  }
}

/** With KMS, the AWS identity that will call Decrypt (for the audit); an STS failure is recorded, not fatal. */
async function callerIdentity(provider: KeyProvider): Promise<string | undefined> {
  try {
    return await provider.callerIdentity();
  } catch (err) {
    return `unknown (${describeError(err).slice(0, 200)})`;
  }
}

function osUser(): string | null {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? null;
  }
}

/** Every failure reveals nothing and says why, in the CLI's one-line format; a setting that is wrong exits 2 (thrown to the CLI). */
function refuse(err: unknown, target: PgTarget): number {
  if (err instanceof ConfigError) throw err;
  const code = (err as { code?: string }).code;
  const known = fromPostgres(err, target);
  if (known instanceof ConfigError) throw known;
  let line: string;
  if (err instanceof AuditError) {
    line = /permission denied/.test(err.message)
      ? "masq: cannot write the audit record (masq.unmask_audit): this needs the masq_unmask role (GRANT masq_unmask TO <your login>)"
      : `masq: cannot write the audit record (masq.unmask_audit): ${err.message}`;
  } else if (code === "42501") {
    line = `masq: permission denied (${(err as Error).message}): reading the vault needs the masq_unmask role (GRANT masq_unmask TO <your login>)`;
  } else if (err instanceof IntegrityError) {
    line = `masq: ${err.message}`;
  } else {
    line = errorLine(known);
  }
  process.stderr.write(`${line}; nothing was shown\n`);
  return exitCodeFor(known);
}
