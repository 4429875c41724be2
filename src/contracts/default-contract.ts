import { readFileSync } from "node:fs";
import type { Contract } from "./contract.ts";
import { readContract } from "./read-contract.ts";

/** The login contract shipped with masq: today's behaviour, written as a contract (contracts/login.yaml). */
export const DEFAULT_CONTRACT_FILE = new URL("../../contracts/login.yaml", import.meta.url);

export function defaultContract(): Contract {
  const read = readContract(readFileSync(DEFAULT_CONTRACT_FILE, "utf8"));
  // A shipped file that does not read is a defect of masq, not of the user's configuration (a test reads it).
  if (read.contract === undefined) throw new Error(`contracts/login.yaml: ${read.errors.map((e) => `${e.line}:${e.col}: ${e.message}`).join("; ")}`);
  return read.contract;
}
