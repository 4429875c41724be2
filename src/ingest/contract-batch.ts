/**
 * A batch's route on the contract path (MASQ_CONTRACT naming a contract other than login's), beside login's (batch.ts):
 * what prepare makes of one message (ContractOutcome) and what the sealer makes of a batch (ContractSealedBatch),
 * which write-contract-batch.ts sends to Postgres. Rows are records here, not columns: this path is not the tuned one.
 */
import type { RowValue, VaultEntry as ContractVaultValue } from "../contracts/compile-contract.ts";
import type { MessageMeta, QuarantineRecord, VaultEntry } from "./batch.ts";

/** One message that its contract accepted: its row for its event type's table. Holds no plain PII but `vault`. */
export interface ContractRow extends MessageMeta {
  kind: "row";
  /** Index into ContractPlan.tables. */
  table: number;
  event: string;
  /** The table's columns' values, in the order of PlannedTable.columns. */
  values: RowValue[];
  /** The originals of its pseudonymised values, until the vault sealer encrypts them (absent once sealed). */
  vault?: ContractVaultValue[];
}

export type ContractOutcome = ContractRow | QuarantineRecord;

/** A batch as committed: rows and quarantine records masked with pseudonym key `keyVersion`, and their vault rows. */
export interface ContractSealedBatch {
  keyVersion: number;
  rows: readonly ContractRow[];
  quarantine: readonly QuarantineRecord[];
  vault: readonly VaultEntry<string>[];
  /** As SealedBatch.vaultEpoch: the epoch under which the sealer left out values it believed the vault holds, or null. */
  vaultEpoch: number | null;
}

export function contractBatchLength(b: ContractSealedBatch): number {
  return b.rows.length + b.quarantine.length;
}
