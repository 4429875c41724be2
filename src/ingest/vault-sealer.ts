import type { KeyObject } from "node:crypto";
import { emptyRowColumns, type Outcome, type QuarantineRecord, type SealedBatch, type SealedBody, type VaultEntry, type VaultEpochs } from "./batch.ts";
import type { ContractOutcome, ContractRow, ContractSealedBatch } from "./contract-batch.ts";
import { nonces, quarantineBodyAad, seal, vaultAad, type DataKeys } from "../keys/data-keys.ts";

/**
 * Encrypts a batch's originals with the current data key: each distinct PII value once (the vault is keyed by
 * pseudonym), and each quarantined body. Values this process already committed to the vault under the same
 * pseudonym key are skipped: the vault holds them, and a busy device or address is then encrypted once, not per
 * message. The memory of them is bounded (oldest forgotten first). It holds under one vault epoch (101_keys_and_vault.sql): a
 * batch that leaves values out carries that epoch, and is refused once vault values were deleted since
 * (StaleVaultError); then staleVault() forgets everything and the batch is sealed again, whole.
 */
export class VaultSealer {
  private readonly dataKeys: Pick<DataKeys, "reserve">;
  /** Pseudonyms (by kind) this process has committed to the vault under pseudonym key `knownVersion`. */
  private readonly known = { ip: new Set<string>(), device_id: new Set<string>() };
  /** The same, for the other kinds a contract declares (the contract path's; its ip and device_id share `known`). */
  private readonly knownOther = new Map<string, Set<string>>();
  private knownVersion = -1;
  /** The vault epoch under which `known` holds. Epochs only grow; a batch committed under an older one adds nothing. */
  private knownEpoch = 0;
  private readonly capacity: number;

  constructor(dataKeys: Pick<DataKeys, "reserve">, capacity = 50_000) {
    this.dataKeys = dataKeys;
    this.capacity = capacity;
  }

  /**
   * Seals a batch and lays it out as the batch statement takes it: rows column by column, quarantine records as
   * records. The one pass from per-message outcomes to columns; nothing downstream turns them back.
   */
  async seal(outcomes: readonly Outcome[], keyVersion: number, signal?: AbortSignal): Promise<SealedBatch> {
    if (keyVersion !== this.knownVersion) this.forget(keyVersion);
    // pseudonym → original, per kind: each distinct value once.
    const todo = { ip: new Map<string, string>(), device_id: new Map<string, string>() };
    let bodies = 0;
    let skipped = false;
    for (const o of outcomes) {
      if (o.kind === "row") {
        if (o.pii === undefined) continue;
        if (!this.known.ip.has(o.row.maskedIp)) todo.ip.set(o.row.maskedIp, o.pii.ip);
        else skipped = true;
        if (!this.known.device_id.has(o.row.maskedDeviceId)) todo.device_id.set(o.row.maskedDeviceId, o.pii.deviceId);
        else skipped = true;
      } else if (o.originalBody !== null) {
        bodies++;
      }
    }
    const vaultEpoch = skipped ? this.knownEpoch : null;
    const count = todo.ip.size + todo.device_id.size + bodies;
    // No await between reserve and the last encryption: the key cannot be replaced (and zeroed) meanwhile.
    const dk = count === 0 ? undefined : await this.dataKeys.reserve(count, signal);
    const nonce = dk === undefined ? [] : nonces(count);
    let n = 0;
    const vault: VaultEntry[] = [];
    if (dk !== undefined) {
      for (const kind of ["ip", "device_id"] as const) {
        for (const [pseudonym, value] of todo[kind]) {
          vault.push({ kind, pseudonym, dataKeyId: dk.id, ...seal(dk.keyObject, Buffer.from(value, "utf8"), vaultAad(kind, pseudonym), nonce[n++]) });
        }
      }
    }
    // The plaintext originals are dropped here: a sealed batch holds only pseudonyms and ciphertext.
    const rows = emptyRowColumns();
    const quarantine: QuarantineRecord[] = [];
    for (const o of outcomes) {
      if (o.kind === "quarantine") {
        quarantine.push({ ...o, originalBody: null, ...(o.originalBody !== null && dk !== undefined ? { sealedBody: sealBody(o, dk.id, dk.keyObject, nonce[n++]!) } : {}) });
        continue;
      }
      const r = o.row;
      rows.messageId.push(o.messageId);
      rows.sentAt.push(o.sentAt === null ? null : o.sentAt.getTime());
      rows.receivedAt.push(o.receivedAt.getTime());
      rows.bodyLength.push(o.bodyLength);
      rows.userId.push(r.userId);
      rows.deviceType.push(r.deviceType);
      rows.maskedIp.push(r.maskedIp);
      rows.maskedDeviceId.push(r.maskedDeviceId);
      rows.locale.push(r.locale);
      rows.appVersion.push(r.appVersion);
      rows.createDate.push(r.createDate);
    }
    return { keyVersion, rows, quarantine, vault, vaultEpoch };
  }

  /**
   * After a commit under vault epochs `epochs` (BatchResult.vaultEpochs): these vault rows exist now, until the epoch
   * moves. Learnt only when every statement committed under the epoch this sealer knows by then: a batch that settles
   * after an erasure advanced the epoch (a prepare thread hears of both by messages, in either order) may name values
   * that erasure deleted, so it teaches nothing.
   */
  committed(batch: Pick<SealedBatch | ContractSealedBatch, "keyVersion" | "vault">, epochs: VaultEpochs | undefined): void {
    if (epochs === undefined || batch.keyVersion !== this.knownVersion) return;
    this.staleVault(epochs.max);
    // Rows the batch carried but did not write (their messages were committed before) are not in the vault.
    if (epochs.min !== this.knownEpoch || epochs.max !== this.knownEpoch || epochs.partial === true) return;
    for (const v of batch.vault) {
      const set = this.knownOf(v.kind);
      set.add(v.pseudonym);
      if (set.size > this.capacity) set.delete(set.values().next().value!);
    }
  }

  /**
   * The contract path's seal (contract-batch.ts): each distinct (kind, pseudonym) once, whatever kinds the contract
   * declares, and each quarantined body; values committed before under the same key and epoch are left out, as seal does.
   */
  async sealContract(outcomes: readonly ContractOutcome[], keyVersion: number, signal?: AbortSignal): Promise<ContractSealedBatch> {
    if (keyVersion !== this.knownVersion) this.forget(keyVersion);
    // kind → pseudonym → original: each distinct value once.
    const todo = new Map<string, Map<string, string>>();
    let values = 0;
    let bodies = 0;
    let skipped = false;
    for (const o of outcomes) {
      if (o.kind === "quarantine") {
        if (o.originalBody !== null) bodies++;
        continue;
      }
      for (const v of o.vault ?? []) {
        if (this.knownOf(v.kind).has(v.pseudonym)) {
          skipped = true;
          continue;
        }
        let byPseudonym = todo.get(v.kind);
        if (byPseudonym === undefined) todo.set(v.kind, (byPseudonym = new Map<string, string>()));
        if (!byPseudonym.has(v.pseudonym)) {
          byPseudonym.set(v.pseudonym, v.original);
          values++;
        }
      }
    }
    const vaultEpoch = skipped ? this.knownEpoch : null;
    const count = values + bodies;
    // No await between reserve and the last encryption: the key cannot be replaced (and zeroed) meanwhile.
    const dk = count === 0 ? undefined : await this.dataKeys.reserve(count, signal);
    const nonce = dk === undefined ? [] : nonces(count);
    let n = 0;
    const vault: VaultEntry<string>[] = [];
    if (dk !== undefined) {
      for (const [kind, byPseudonym] of todo) {
        for (const [pseudonym, value] of byPseudonym) {
          vault.push({ kind, pseudonym, dataKeyId: dk.id, ...seal(dk.keyObject, Buffer.from(value, "utf8"), vaultAad(kind, pseudonym), nonce[n++]) });
        }
      }
    }
    // The plaintext originals are dropped here: a sealed batch holds only pseudonyms and ciphertext.
    const rows: ContractRow[] = [];
    const quarantine: QuarantineRecord[] = [];
    for (const o of outcomes) {
      if (o.kind === "quarantine") {
        quarantine.push({ ...o, originalBody: null, ...(o.originalBody !== null && dk !== undefined ? { sealedBody: sealBody(o, dk.id, dk.keyObject, nonce[n++]!) } : {}) });
      } else {
        rows.push({ messageId: o.messageId, sentAt: o.sentAt, receivedAt: o.receivedAt, bodyLength: o.bodyLength, kind: "row", table: o.table, event: o.event, values: o.values });
      }
    }
    return { keyVersion, rows, quarantine, vault, vaultEpoch };
  }

  private knownOf(kind: string): Set<string> {
    if (kind === "ip") return this.known.ip;
    if (kind === "device_id") return this.known.device_id;
    let set = this.knownOther.get(kind);
    if (set === undefined) this.knownOther.set(kind, (set = new Set()));
    return set;
  }

  /** The vault epoch what this sealer knows holds under; prepare threads' sealers follow the main thread's. */
  get vaultEpoch(): number {
    return this.knownEpoch;
  }

  /** Vault values were deleted: what was known says nothing about the vault of `epoch` (StaleVaultError.epoch). */
  staleVault(epoch: number): void {
    if (epoch <= this.knownEpoch) return;
    this.known.ip.clear();
    this.known.device_id.clear();
    this.knownOther.clear();
    this.knownEpoch = epoch;
  }

  /** A new pseudonym key: what was known under the old one says nothing about the vault under the new one. */
  private forget(keyVersion: number): void {
    this.known.ip.clear();
    this.known.device_id.clear();
    this.knownOther.clear();
    this.knownVersion = keyVersion;
  }
}

function sealBody(o: QuarantineRecord, dataKeyId: string, key: KeyObject, nonce: Buffer): SealedBody {
  return { dataKeyId, ...seal(key, Buffer.from(o.originalBody!, "utf8"), quarantineBodyAad(o.messageId), nonce) };
}
