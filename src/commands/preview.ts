import { createInterface } from "node:readline";
import { applyContract } from "../contracts/apply-contract.ts";
import { compileContract, contractKeys, parseTimestamp } from "../contracts/compile-contract.ts";
import { loadContract } from "../contracts/contract.ts";
import { ConfigError } from "../errors.ts";
import { readContractFile, readPseudonymKey, settingSources } from "../settings/config.ts";

/**
 * The key preview uses when MASQ_PSEUDONYM_KEY is unset: public (it is printed here), so its pseudonyms show what a
 * stored value looks like and which values share one, never the stored pseudonyms themselves. masq's managed key
 * lives wrapped in Postgres, which preview does not touch; set MASQ_PSEUDONYM_KEY(_FILE) as `run` reads it to see
 * the pseudonyms exactly as stored.
 */
const PREVIEW_KEY = new TextEncoder().encode("masq preview key: public, not set");

/**
 * `masq preview`: for each line of stdin (one message body), one JSON line on stdout: the row the contract would
 * store (pseudonyms and generalised values as stored, dropped fields absent; which kinds go to the vault, never
 * the originals) or the quarantine reason and the field's path. No AWS, no Postgres. Exit 2 when the contract does
 * not read (every error on stderr with line:column), else 0 whatever the events.
 */
export async function previewCommand(flags: Record<string, unknown>): Promise<number> {
  const src = settingSources(flags, process.env);
  const setting = flags.contract === undefined ? "MASQ_CONTRACT" : "--contract";
  const loaded = loadContract(readContractFile(src), setting);
  if (loaded.contract === undefined) {
    for (const e of loaded.errors) process.stderr.write(`masq: ${e}\n`);
    return 2;
  }
  const sentAt = sentAtOf(flags.sentAt);
  const own = readPseudonymKey(src);
  const label = own === undefined ? "preview" : "MASQ_PSEUDONYM_KEY";
  if (own === undefined) process.stderr.write("masq: preview: pseudonyms use a public preview key, not the stored ones (set MASQ_PSEUDONYM_KEY to see those)\n");
  const compiled = compileContract(loaded.contract);
  const keys = contractKeys(own ?? PREVIEW_KEY);

  let line = 0;
  for await (const body of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    line++;
    if (body.trim() === "") continue;
    const a = applyContract(compiled, { body, sentAt }, keys);
    const out = a.ok
      ? { line, event: a.event, table: a.table, row: a.row, vault: a.vault.map((v) => v.kind), key: label }
      : { line, quarantine: a.reason, path: a.path };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  }
  return 0;
}

/** --sent-at: the SQS sent time to assume for every event ($sent_at); now when not given. */
function sentAtOf(value: unknown): Date {
  if (value === undefined) return new Date();
  const at = typeof value === "string" ? parseTimestamp(value) : null;
  if (at === null) throw new ConfigError("--sent-at", 'must be an ISO 8601 time with a zone, e.g. "2026-12-06T21:00:00Z"');
  return at;
}
