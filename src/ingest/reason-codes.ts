import type { ReasonCode } from "./login-event.ts";

/** Every reason code a quarantine record can carry, for checking a filter the user gives (`--reason-code`). */
export const REASON_CODES = [
  "invalid_json",
  "not_an_object",
  "missing_field",
  "wrong_type",
  "too_long",
  "empty_field",
  "invalid_text",
  "invalid_ip",
  "invalid_app_version",
  "db_rejected",
  "unprocessable",
] as const satisfies readonly ReasonCode[];

// A reason code added to ReasonCode but not listed above fails to compile here.
type Unlisted = Exclude<ReasonCode, (typeof REASON_CODES)[number]>;
const everyCodeListed: Unlisted extends never ? true : Unlisted = true;
void everyCodeListed;
