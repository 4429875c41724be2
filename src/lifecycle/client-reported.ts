import { userInfo } from "node:os";
import { describeError } from "../errors.ts";
import type { KeyProvider } from "../vault/key-provider.ts";

/**
 * What the client says about itself, recorded apart from what the server knows (session_user): the operating-system
 * user, and with KMS the AWS caller that STS names. Both come from the client's machine and could be made up by a
 * client that is not masq, which is why the audit labels them client-reported.
 */
export async function clientReported(provider: KeyProvider): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const os = osUser();
  if (os !== undefined) out.os_user = os;
  try {
    const aws = await provider.callerIdentity();
    if (aws !== undefined) out.aws_identity = aws;
  } catch (err) {
    out.aws_identity = `unknown (${describeError(err).slice(0, 200)})`;
  }
  return out;
}

function osUser(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER;
  }
}
