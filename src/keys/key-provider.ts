/**
 * The master key, behind one small interface: AWS KMS, or masq's local provider (a 256-bit key from the environment
 * or a file); createKeyProvider picks one from the settings. Nothing else in masq knows which one is in use; both wrap
 * keys in an envelope that is bound to an encryption context, so a wrapped key copied to another row or purpose does
 * not unwrap. The KMS and STS clients are imported at the first call that needs them: a process with the local
 * provider never loads them.
 */
import { createHmac, randomBytes } from "node:crypto";
import type { KMSClient } from "@aws-sdk/client-kms";
import { ConfigError, FatalError, TransientError } from "../errors.ts";
import type { KeyConfig } from "../settings/config.ts";
import { IntegrityError, open, seal, NONCE_BYTES } from "./data-keys.ts";

export type KeyPurpose = "vault" | "pseudonym" | "audit";

/** What a wrapped key is for, and which key it is. Both providers bind it: unwrapping needs the same context. */
export interface KeyContext {
  purpose: KeyPurpose;
  /** data_keys.id for a vault data key; "v<version>" for a pseudonym key. */
  keyId: string;
}

export interface GeneratedKey {
  /** 32 random bytes. Held in memory only. */
  plaintext: Uint8Array;
  wrapped: Uint8Array;
  /** The master key that wrapped it (a KMS key ARN, or "local:<fingerprint>"). */
  masterKeyId: string;
}

export type ProviderName = "kms" | "local";

export interface KeyProvider {
  readonly name: ProviderName;
  /** The configured master key, resolved (a KMS alias becomes its key ARN). Checks that it is usable: fails fast. */
  currentMasterKeyId(signal?: AbortSignal): Promise<string>;
  /** A new AES-256 key, wrapped under the current master key: one call to the provider. */
  generateKey(context: KeyContext, signal?: AbortSignal): Promise<GeneratedKey>;
  unwrap(wrapped: Uint8Array, masterKeyId: string, context: KeyContext, signal?: AbortSignal): Promise<Uint8Array>;
  /** Re-wraps under the current master key. With KMS the key never leaves KMS in plaintext (ReEncrypt). */
  rewrap(wrapped: Uint8Array, masterKeyId: string, context: KeyContext, signal?: AbortSignal): Promise<{ wrapped: Uint8Array; masterKeyId: string }>;
  /** Who is calling, for the unmask audit: the AWS caller's ARN with KMS; undefined with the local provider. */
  callerIdentity(signal?: AbortSignal): Promise<string | undefined>;
  close(): void;
}

/** Called after every provider call, for metrics: the operation and whether it succeeded. */
export type ProviderCallObserver = (operation: string, ok: boolean) => void;

/** The encryption context both providers bind. Stable key order: the local provider uses it as associated data. */
export function encryptionContext(c: KeyContext): Record<string, string> {
  return { app: "masq", key_id: c.keyId, purpose: c.purpose };
}

const MAGIC = Buffer.from("MQL1");
const FINGERPRINT_BYTES = 8;

/** A local master key's public name: "local:" + 16 hex digits of HMAC-SHA256(key, "masq master key id"). */
export function localMasterKeyId(key: Uint8Array): string {
  return `local:${fingerprint(key).toString("hex")}`;
}

function fingerprint(key: Uint8Array): Buffer {
  return createHmac("sha256", key).update("masq master key id").digest().subarray(0, FINGERPRINT_BYTES);
}

/**
 * The local provider: the same envelope as KMS, for development, air-gapped installs and the demo. A wrapped key is
 * "MQL1" ‖ master-key fingerprint (8 bytes) ‖ nonce (12) ‖ AES-256-GCM(master, key, aad = encryption context).
 * The fingerprint picks the master key: the current one (MASQ_MASTER_KEY) or an earlier one kept for rotation
 * (MASQ_MASTER_KEY_PREVIOUS).
 */
export class LocalKeyProvider implements KeyProvider {
  readonly name = "local" as const;
  private readonly current: Uint8Array;
  private readonly byFingerprint = new Map<string, Uint8Array>();
  private readonly observe: ProviderCallObserver | undefined;

  constructor(current: Uint8Array, previous: readonly Uint8Array[] = [], observe?: ProviderCallObserver) {
    this.current = current;
    this.observe = observe;
    for (const k of [current, ...previous]) this.byFingerprint.set(fingerprint(k).toString("hex"), k);
  }

  currentMasterKeyId(): Promise<string> {
    return Promise.resolve(localMasterKeyId(this.current));
  }

  generateKey(context: KeyContext): Promise<GeneratedKey> {
    const plaintext = new Uint8Array(randomBytes(32));
    this.observe?.("GenerateDataKey", true);
    return Promise.resolve({ plaintext, wrapped: this.wrap(plaintext, context), masterKeyId: localMasterKeyId(this.current) });
  }

  unwrap(wrapped: Uint8Array, masterKeyId: string, context: KeyContext): Promise<Uint8Array> {
    try {
      const w = Buffer.from(wrapped);
      if (w.length < MAGIC.length + FINGERPRINT_BYTES + NONCE_BYTES + 16 || !w.subarray(0, 4).equals(MAGIC)) {
        throw new FatalError(`a ${context.purpose} key is not in the local provider's format (wrapped by ${masterKeyId}?)`);
      }
      const fp = w.subarray(4, 4 + FINGERPRINT_BYTES).toString("hex");
      const master = this.byFingerprint.get(fp);
      if (master === undefined) {
        throw new ConfigError(
          "MASQ_MASTER_KEY",
          `the ${context.purpose} key ${context.keyId} is wrapped under master key local:${fp}, which is neither MASQ_MASTER_KEY nor in MASQ_MASTER_KEY_PREVIOUS`,
        );
      }
      const nonceAt = 4 + FINGERPRINT_BYTES;
      const key = open(master, { nonce: w.subarray(nonceAt, nonceAt + NONCE_BYTES), ciphertext: w.subarray(nonceAt + NONCE_BYTES) }, aad(context));
      this.observe?.("Decrypt", true);
      return Promise.resolve(new Uint8Array(key));
    } catch (err) {
      this.observe?.("Decrypt", false);
      if (err instanceof IntegrityError) {
        return Promise.reject(new FatalError(`the ${context.purpose} key ${context.keyId} does not unwrap: its wrapped form or its binding was altered`));
      }
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  async rewrap(wrapped: Uint8Array, masterKeyId: string, context: KeyContext): Promise<{ wrapped: Uint8Array; masterKeyId: string }> {
    const key = await this.unwrap(wrapped, masterKeyId, context);
    try {
      this.observe?.("ReEncrypt", true);
      return { wrapped: this.wrap(key, context), masterKeyId: localMasterKeyId(this.current) };
    } finally {
      key.fill(0);
    }
  }

  callerIdentity(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }

  close(): void {
    this.current.fill(0);
    for (const k of this.byFingerprint.values()) k.fill(0);
  }

  private wrap(key: Uint8Array, context: KeyContext): Uint8Array {
    const s = seal(this.current, key, aad(context));
    return new Uint8Array(Buffer.concat([MAGIC, fingerprint(this.current), s.nonce, s.ciphertext]));
  }
}

function aad(context: KeyContext): Buffer {
  return Buffer.from(JSON.stringify(encryptionContext(context)));
}

export interface KmsProviderOptions {
  /** MASQ_KMS_KEY_ID: a key id, key ARN, alias name ("alias/masq") or alias ARN. */
  keyId: string;
  region: string;
  /** AWS_ENDPOINT_URL_KMS (or AWS_ENDPOINT_URL): LocalStack, moto, or another KMS-compatible server. */
  endpoint?: string | undefined;
  stsEndpoint?: string | undefined;
  observe?: ProviderCallObserver | undefined;
}

/** Errors no retry can fix: access refused, the key disabled, deleted or of the wrong kind, a ciphertext altered. */
const FATAL = new Set([
  "AccessDeniedException",
  "UnrecognizedClientException",
  "InvalidClientTokenId",
  "NotFoundException",
  "DisabledException",
  "KMSInvalidStateException",
  "InvalidKeyUsageException",
  "InvalidCiphertextException",
  "IncorrectKeyException",
  "InvalidGrantTokenException",
  "ValidationException",
]);

/**
 * The master key in AWS KMS. Data keys come from GenerateDataKey (AES_256); each call carries an encryption context
 * naming masq, the purpose and the key, which KMS binds to the ciphertext and writes to CloudTrail, and which IAM
 * policies can constrain (SECURITY.md: ingestion may decrypt only purpose=pseudonym). KMS is called once per data
 * key, never per message.
 */
export class KmsKeyProvider implements KeyProvider {
  readonly name = "kms" as const;
  /** The KMS SDK, loaded at the first call: a process that never calls KMS (a check, a failing start) never loads it. */
  private kms: Promise<{ sdk: typeof import("@aws-sdk/client-kms"); client: KMSClient }> | undefined;
  private readonly opts: KmsProviderOptions;
  private resolvedArn: string | undefined;

  constructor(opts: KmsProviderOptions) {
    this.opts = opts;
  }

  private client(): Promise<{ sdk: typeof import("@aws-sdk/client-kms"); client: KMSClient }> {
    const opts = this.opts;
    return (this.kms ??= import("@aws-sdk/client-kms").then((sdk) => ({
      sdk,
      // Every wait has an end: an endpoint that accepts no connection, or answers nothing, fails and is classed transient.
      client: new sdk.KMSClient({
        region: opts.region,
        maxAttempts: 4,
        requestHandler: { connectionTimeout: 5_000, requestTimeout: 30_000 },
        ...(opts.endpoint === undefined ? {} : { endpoint: opts.endpoint }),
      }),
    })));
  }

  async currentMasterKeyId(signal?: AbortSignal): Promise<string> {
    if (this.resolvedArn !== undefined) return this.resolvedArn;
    const { sdk, client } = await this.client();
    const r = await this.call("DescribeKey", () => client.send(new sdk.DescribeKeyCommand({ KeyId: this.opts.keyId }), { abortSignal: signal }));
    const meta = r.KeyMetadata;
    if (meta?.Arn === undefined) throw new FatalError(`KMS DescribeKey gave no ARN for MASQ_KMS_KEY_ID`);
    if (meta.Enabled === false || (meta.KeyState !== undefined && meta.KeyState !== "Enabled")) {
      throw new FatalError(`the KMS key in MASQ_KMS_KEY_ID (${meta.Arn}) is ${meta.KeyState ?? "disabled"}; masq needs an enabled key`);
    }
    if (meta.KeyUsage !== undefined && meta.KeyUsage !== "ENCRYPT_DECRYPT") {
      throw new FatalError(`the KMS key in MASQ_KMS_KEY_ID (${meta.Arn}) is for ${meta.KeyUsage}; masq needs a symmetric ENCRYPT_DECRYPT key`);
    }
    this.resolvedArn = meta.Arn;
    return meta.Arn;
  }

  async generateKey(context: KeyContext, signal?: AbortSignal): Promise<GeneratedKey> {
    const keyId = await this.currentMasterKeyId(signal);
    const { sdk, client } = await this.client();
    const r = await this.call("GenerateDataKey", () =>
      client.send(new sdk.GenerateDataKeyCommand({ KeyId: keyId, KeySpec: "AES_256", EncryptionContext: encryptionContext(context) }), { abortSignal: signal }),
    );
    if (r.Plaintext === undefined || r.CiphertextBlob === undefined) throw new FatalError("KMS GenerateDataKey returned no key");
    return { plaintext: r.Plaintext, wrapped: r.CiphertextBlob, masterKeyId: r.KeyId ?? keyId };
  }

  async unwrap(wrapped: Uint8Array, masterKeyId: string, context: KeyContext, signal?: AbortSignal): Promise<Uint8Array> {
    const { sdk, client } = await this.client();
    const r = await this.call("Decrypt", () =>
      client.send(new sdk.DecryptCommand({ CiphertextBlob: wrapped, KeyId: masterKeyId, EncryptionContext: encryptionContext(context) }), { abortSignal: signal }),
    );
    if (r.Plaintext === undefined) throw new FatalError("KMS Decrypt returned no key");
    return r.Plaintext;
  }

  async rewrap(wrapped: Uint8Array, masterKeyId: string, context: KeyContext, signal?: AbortSignal): Promise<{ wrapped: Uint8Array; masterKeyId: string }> {
    const destination = await this.currentMasterKeyId(signal);
    const ctx = encryptionContext(context);
    const { sdk, client } = await this.client();
    const r = await this.call("ReEncrypt", () =>
      client.send(
        new sdk.ReEncryptCommand({
          CiphertextBlob: wrapped,
          SourceKeyId: masterKeyId,
          SourceEncryptionContext: ctx,
          DestinationKeyId: destination,
          DestinationEncryptionContext: ctx,
        }),
        { abortSignal: signal },
      ),
    );
    if (r.CiphertextBlob === undefined) throw new FatalError("KMS ReEncrypt returned no ciphertext");
    return { wrapped: r.CiphertextBlob, masterKeyId: r.KeyId ?? destination };
  }

  async callerIdentity(signal?: AbortSignal): Promise<string | undefined> {
    const { GetCallerIdentityCommand, STSClient } = await import("@aws-sdk/client-sts");
    const sts = new STSClient({ region: this.opts.region, ...(this.opts.stsEndpoint === undefined ? {} : { endpoint: this.opts.stsEndpoint }) });
    try {
      const r = await this.call("GetCallerIdentity", () => sts.send(new GetCallerIdentityCommand({}), { abortSignal: signal }));
      return r.Arn;
    } finally {
      sts.destroy();
    }
  }

  close(): void {
    void this.kms?.then(({ client }) => client.destroy());
  }

  /** The setting that decides where KMS requests go, and the host, for errors (never a credential). */
  private where(): string {
    if (this.opts.endpoint === undefined) return `KMS in AWS_REGION ${this.opts.region}`;
    try {
      const u = new URL(this.opts.endpoint);
      return `AWS_ENDPOINT_URL_KMS at ${u.hostname}:${u.port || (u.protocol === "https:" ? "443" : "80")}`;
    } catch {
      return "AWS_ENDPOINT_URL_KMS";
    }
  }

  private async call<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    try {
      const r = await fn();
      this.opts.observe?.(operation, true);
      return r;
    } catch (err) {
      this.opts.observe?.(operation, false);
      throw classifyKmsError(err, operation, this.where());
    }
  }
}

function classifyKmsError(err: unknown, operation: string, where: string): TransientError | FatalError {
  if (err instanceof TransientError || err instanceof FatalError) return err;
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const name = e.name ?? "Error";
  const message = `KMS ${operation}: ${name}: ${e.message ?? String(err)}`;
  const status = e.$metadata?.httpStatusCode;
  if (FATAL.has(name) || (status !== undefined && status >= 400 && status < 500 && status !== 429 && !/Throttl|LimitExceeded/.test(name))) {
    const hint =
      name === "AccessDeniedException"
        ? " — the caller lacks the KMS permission for this operation (SECURITY.md lists the IAM policy per role)"
        : name === "NotFoundException"
          ? " — check MASQ_KMS_KEY_ID (and AWS_ENDPOINT_URL_KMS / AWS_REGION)"
          : "";
    return new FatalError(`${message}${hint}`);
  }
  return new TransientError(message, `kms_${operation}`, { what: "cannot reach KMS", object: where, hint: `${operation}: ${e.message ?? name}` });
}

export function createKeyProvider(config: KeyConfig, observe?: ProviderCallObserver): KeyProvider {
  if (config.provider === "kms") {
    return new KmsKeyProvider({ keyId: config.kmsKeyId, region: config.region, endpoint: config.kmsEndpoint, stsEndpoint: config.stsEndpoint, observe });
  }
  // Copies: the provider zeroes its keys on close.
  return new LocalKeyProvider(Uint8Array.from(config.masterKey), config.previousMasterKeys.map((k) => Uint8Array.from(k)), observe);
}
