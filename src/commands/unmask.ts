import { readFileSync } from "node:fs";
import type pg from "pg";
import { openAuditKey } from "../lifecycle/audit-key.ts";
import { clientReported } from "../lifecycle/client-reported.ts";
import { revealVault } from "../lifecycle/reveal-vault.ts";
import { sealAudit } from "../lifecycle/seal-audit.ts";
import { databaseSetting, readConnectTimeoutMs, readDatabaseUrl, readKeyConfig, readPseudonymKey, readTable } from "../config.ts";
import { revealing } from "../closed-stdout.ts";
import { ConfigError, describeError, errorLine, exitCodeFor } from "../errors.ts";
import { fromPostgres } from "../sink/pg-errors.ts";
import type { PgTarget } from "../sink/pg-target.ts";
import { waitForPostgres } from "../sink/wait-for-postgres.ts";
import type { PiiKind } from "../mask/pseudonymize.ts";
import { createDb, type Db } from "../sink/db.ts";
import { inTransaction } from "../sink/transaction.ts";
import { qualified } from "../sink/table-name.ts";
import { canonicalizeIp } from "../transform/ip.ts";
import { IntegrityError } from "../vault/aead.ts";
import type { KeyProvider } from "../vault/key-provider.ts";
import { createKeyProvider } from "../vault/key-provider-from-config.ts";
import { activePseudonymKey } from "../vault/pseudonym-keys.ts";
import { formatUnmasked, type UnmaskFormat } from "../lifecycle/unmask-output.ts";

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
 * The database hands out ciphertext only for an audit record (who, when, why, which values) that has committed
 * (lifecycle/reveal-vault.ts). Authorisation is the database's (only masq_unmask may call the reveal functions) and the
 * master key's (KMS Decrypt, encryption context purpose=vault, pseudonym and audit). Exit 1 when a value is withheld
 * because it is not its pseudonym's.
 */
export async function unmaskCommand(flags: Record<string, unknown>): Promise<number> {
  const reason = readReason(flags);
  const selector = readSelector(flags);
  const format = readFormat(flags);
  const table = readTable(flags, process.env);
  return withVault(flags, async ({ db, provider, client }) => {
    const wanted = await wantedPseudonyms(db.pool, table, selector);
    const r = await revealVault(db.pool, provider, {
      reason,
      selector: describeSelector(selector),
      client,
      wanted,
      limit: selector.limit,
      pseudonymKeyOverride: readPseudonymKey(process.env),
    });
    // A bare pseudonym is looked up as each kind: it is missing only when no kind has it. Past the limit, unknown.
    const notFound = r.more ? [] : [...new Set(wanted.map((w) => w.pseudonym))].filter((p) => !r.found.has(p));
    if (notFound.length > 0) process.stderr.write(`masq: not in the vault (${notFound.length}): ${notFound.join(", ")}\n`);
    if (r.more) process.stderr.write(`masq: more values match; showing the first ${selector.limit} (raise --limit for more)\n`);
    revealing("unmask", r.auditSeq);
    process.stdout.write(formatUnmasked(r.values, format));
    for (const f of r.forged) {
      process.stderr.write(
        `masq: the vault value of ${f.kind} ${f.pseudonym} is not that pseudonym's value (planted with ingestion's credentials?): ` +
          "not shown; marked suspect, so ingestion replaces it when the true value arrives\n",
      );
    }
    return r.forged.length > 0 ? 1 : 0;
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
  return withVault(flags, async ({ db, provider, client }) => {
    const key = await activePseudonymKey(db.pool, provider, readPseudonymKey(process.env));
    const pseudonym = key.pseudonymizer.pseudonymize(kind as PiiKind, value);
    const auditKey = await openAuditKey(db.pool, provider);
    try {
      await inTransaction(db.pool, async (c) => {
        const r = await c.query<{ seq: string }>("SELECT masq.audit_pseudonym($1, $2, $3, $4, $5)::text AS seq", [
          reason,
          JSON.stringify({ kind, keyVersion: key.version }),
          JSON.stringify(client),
          [`${kind}:${pseudonym}`],
          auditKey.version,
        ]);
        await sealAudit(c, auditKey, r.rows[0]!.seq);
      });
    } finally {
      auditKey.key.fill(0);
    }
    process.stdout.write(`${pseudonym}\n`);
    return 0;
  });
}

/**
 * Opens the key provider and the database for one audited command, learns what the client reports of itself (OS
 * user, AWS caller), runs `work`, and closes both; its exit code, or the refusal's code and message with nothing shown.
 */
export async function withVault(flags: Record<string, unknown>, work: (ctx: { db: Db; provider: KeyProvider; client: Record<string, string> }) => Promise<number>): Promise<number> {
  const provider = createKeyProvider(readKeyConfig(process.env));
  const connectTimeoutMs = readConnectTimeoutMs(process.env);
  const db = createDb({ databaseUrl: readDatabaseUrl(flags, process.env), setting: databaseSetting(flags, process.env), connectTimeoutMs, poolSize: 2 });
  try {
    await waitForPostgres(db, { deadlineMs: connectTimeoutMs });
    return await work({ db, provider, client: await clientReported(provider) });
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

export function readFormat(flags: Record<string, unknown>): UnmaskFormat {
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
async function wantedPseudonyms(client: pg.Pool, table: { schema: string; name: string }, s: Selector): Promise<{ kind: PiiKind; pseudonym: string }[]> {
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

/** Every failure reveals nothing and says why, in the CLI's one-line format; a setting that is wrong exits 2 (thrown to the CLI). */
function refuse(err: unknown, target: PgTarget): number {
  if (err instanceof ConfigError) throw err;
  const code = (err as { code?: string }).code;
  const known = fromPostgres(err, target);
  if (known instanceof ConfigError) throw known;
  let line: string;
  if (code === "42501" || /permission denied/.test(describeError(err))) {
    line = `masq: permission denied (${(err as Error).message}): reading the vault needs the masq_unmask role (GRANT masq_unmask TO <your login>)`;
  } else if (err instanceof IntegrityError) {
    line = `masq: ${err.message}`;
  } else {
    line = errorLine(known);
  }
  process.stderr.write(`${line}; nothing was shown\n`);
  return exitCodeFor(known);
}
