/**
 * The few error classes masq decides by. Every AWS or database error is wrapped where the call is made,
 * so the runner never inspects driver-specific shapes:
 *   ConfigError    → the user must change a setting; exit 2 before anything is touched.
 *   TransientError → back off and retry; the same call can succeed later.
 *   DataError      → the database refused these rows; split the batch and quarantine the offenders.
 *   FatalError     → an invariant is broken (missing table, no permission); stop loudly, delete nothing.
 */
export class ConfigError extends Error {
  override name = "ConfigError";
  readonly setting: string;
  constructor(setting: string, problem: string) {
    super(`${setting}: ${problem}`);
    this.setting = setting;
  }
}

export class TransientError extends Error {
  override name = "TransientError";
  readonly cause_: string;
  constructor(message: string, cause: string) {
    super(message);
    this.cause_ = cause;
  }
}

export class DataError extends Error {
  override name = "DataError";
  readonly code: string;
  constructor(message: string, code: string) {
    super(message);
    this.code = code;
  }
}

export class FatalError extends Error {
  override name = "FatalError";
}

/** A short, PII-free description of any thrown value, for logs. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === "string" && code !== "" && !err.message.includes(code)
      ? `${err.name}: ${err.message} (${code})`
      : `${err.name}: ${err.message}`;
  }
  return String(err);
}
