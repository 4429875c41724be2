import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ConfigError } from "../errors.ts";
import type { Contract } from "./contract.ts";
import { DEFAULT_CONTRACT_FILE } from "./default-contract.ts";
import { formatContractError, readContract } from "./read-contract.ts";

/** A contract file as the commands read it: its name as shown, and the contract or every error as "file:line:col: …". */
export type LoadedContract = { file: string; contract: Contract; errors: [] } | { file: string; contract: undefined; errors: string[] };

/**
 * Reads the contract file `path` (MASQ_CONTRACT or --contract), or the login contract shipped with masq when it is
 * undefined. A file that cannot be read is a ConfigError naming the setting.
 */
export function loadContract(path: string | undefined, setting = "MASQ_CONTRACT"): LoadedContract {
  const file = path ?? fileURLToPath(DEFAULT_CONTRACT_FILE);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(setting, `cannot read ${file} (${code}); give a contract file (YAML)`);
  }
  const read = readContract(text);
  if (read.contract === undefined) return { file, contract: undefined, errors: read.errors.map((e) => formatContractError(file, e)) };
  return { file, contract: read.contract, errors: [] };
}

/** One line about a contract that reads: its event types and how many fields each classifies. */
export function describeContract(contract: Contract): string {
  return contract.events.map((e) => `${e.name} → ${e.table} (${e.fields.length} fields, unknown fields: ${e.unknown})`).join("; ");
}
