import type { KMSClient } from "@aws-sdk/client-kms";
import { FatalError, TransientError } from "../errors.ts";
import { encryptionContext, type GeneratedKey, type KeyContext, type KeyProvider, type ProviderCallObserver } from "./key-provider.ts";

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
