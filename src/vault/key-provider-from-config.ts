import type { KeyConfig } from "../settings/config.ts";
import type { KeyProvider, ProviderCallObserver } from "./key-provider.ts";
import { KmsKeyProvider } from "./kms-provider.ts";
import { LocalKeyProvider } from "./local-provider.ts";

export function createKeyProvider(config: KeyConfig, observe?: ProviderCallObserver): KeyProvider {
  if (config.provider === "kms") {
    return new KmsKeyProvider({ keyId: config.kmsKeyId, region: config.region, endpoint: config.kmsEndpoint, stsEndpoint: config.stsEndpoint, observe });
  }
  // Copies: the provider zeroes its keys on close.
  return new LocalKeyProvider(Uint8Array.from(config.masterKey), config.previousMasterKeys.map((k) => Uint8Array.from(k)), observe);
}
