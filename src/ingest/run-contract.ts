/**
 * The contract `masq run` and the Lambda handler ingest by, read and compiled once at start: undefined for the login
 * path (MASQ_CONTRACT unset, or naming the shipped contracts/login.yaml), whose tuned code stays as it is. Imported
 * only when MASQ_CONTRACT is set, so the login path's start loads no YAML parser.
 */
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { DEFAULT_CONTRACT_FILE, loadContract } from "../contracts/contract.ts";
import { ConfigError } from "../errors.ts";
import { contractCommitter, type ContractCommitter } from "./commit-contract-batch.ts";
import { planContract } from "./contract-plan.ts";

/** Reads, checks and compiles the contract file; a file that does not read or check is a ConfigError (exit 2) in one line. */
export function openRunContract(file: string, setting = "MASQ_CONTRACT"): ContractCommitter | undefined {
  if (isShippedLoginContract(file)) return undefined;
  const loaded = loadContract(file, setting);
  if (loaded.contract === undefined) {
    const more = loaded.errors.length > 1 ? ` (and ${loaded.errors.length - 1} more)` : "";
    throw new ConfigError(setting, `${loaded.errors[0]}${more}; masq check --offline --contract ${file} lists every error`);
  }
  try {
    return contractCommitter(planContract(loaded.contract, file));
  } catch (err) {
    throw new ConfigError(setting, `${file}: ${(err as Error).message}`);
  }
}

function isShippedLoginContract(file: string): boolean {
  try {
    return realpathSync(file) === realpathSync(fileURLToPath(DEFAULT_CONTRACT_FILE));
  } catch {
    // A file that cannot be read is reported by loadContract, naming the setting.
    return false;
  }
}
