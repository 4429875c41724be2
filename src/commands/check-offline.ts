import { describeContract, loadContract } from "../contracts/load-contract.ts";
import { ConfigError, errorLine } from "../errors.ts";
import { readContractFile } from "../settings/config.ts";

/**
 * `masq check --offline`: what can be checked without AWS or Postgres, in check's format. Today that is the contract
 * file (MASQ_CONTRACT, --contract, or the shipped login contract): every error on its own line with its line and
 * column, as `vector validate` reports them. Exit 0 when it reads, 2 when it does not (a configuration error).
 */
export function checkOffline(flags: Record<string, unknown>): number {
  try {
    const loaded = loadContract(readContractFile(flags, process.env), flags.contract === undefined ? "MASQ_CONTRACT" : "--contract");
    if (loaded.contract !== undefined) {
      process.stdout.write(`ok    contract: ${loaded.file}: ${describeContract(loaded.contract)}\n`);
      return 0;
    }
    for (const e of loaded.errors) process.stdout.write(`FAIL  contract: ${e}\n`);
    process.stdout.write(`${loaded.errors.length} error${loaded.errors.length === 1 ? "" : "s"} in ${loaded.file}\n`);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stdout.write(`FAIL  contract: ${errorLine(err).replace(/^masq: /, "")}\n`);
  }
  return 2;
}
