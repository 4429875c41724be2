/**
 * The few error classes masq decides by. Every AWS or database error is wrapped where the call is made,
 * so the runner never inspects driver-specific shapes:
 *   ConfigError    → the user must change a setting; exit 2 before anything is touched.
 *   TransientError → back off and retry; the same call can succeed later.
 *   DataError      → the database refused these rows; split the batch and quarantine the offenders.
 *   FatalError     → an invariant is broken (missing table, no permission); stop loudly, delete nothing.
 * Each may carry what a person needs to act (ErrorHelp); errorLine() turns any thrown value into the one line
 * masq prints on stderr, and exitCodeFor() into the exit code docs/operations.md ("Exit codes") documents.
 */

/** What a person reads: `masq: <what> (<object>): <hint>`. All optional; a message alone still prints. */
export interface ErrorHelp {
  /** What went wrong, in words ("cannot reach Postgres"). */
  what?: string | undefined;
  /** The setting or object to look at ("DATABASE_URL at db.example.com:5432", "table public.user_logins"); a ConfigError's defaults to its setting. */
  object?: string | undefined;
  /** What to do about it. */
  hint?: string | undefined;
}

export class ConfigError extends Error {
  override name = "ConfigError";
  readonly setting: string;
  readonly problem: string;
  readonly help: ErrorHelp;
  constructor(setting: string, problem: string, help: ErrorHelp = {}) {
    super(`${setting}: ${problem}`);
    this.setting = setting;
    this.problem = problem;
    this.help = help;
  }
}

export class TransientError extends Error {
  override name = "TransientError";
  readonly cause_: string;
  readonly help: ErrorHelp;
  constructor(message: string, cause: string, help: ErrorHelp = {}) {
    super(message);
    this.cause_ = cause;
    this.help = help;
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
  readonly help: ErrorHelp;
  constructor(message: string, help: ErrorHelp = {}) {
    super(message);
    this.help = help;
  }
}

/**
 * A setting that was checked at start and stopped working while `run` ran (the queue was deleted, the credentials
 * expired): no retry can cure it, but it is a runtime failure (exit 1), not a mistake in how masq was started (exit
 * 2). The line still names the setting and says what was wrong with it.
 */
export function stoppedWorking(err: ConfigError): FatalError {
  const e = new FatalError(err.message, {
    what: "a setting stopped working while masq ran",
    object: err.help.object ?? err.setting,
    hint: `${err.problem}${err.help.hint === undefined ? "" : `; ${err.help.hint}`}; nothing uncommitted was deleted: fix it and start masq again`,
  });
  e.cause = err;
  return e;
}

/**
 * A one-shot command gave up waiting for a server (MASQ_CONNECT_TIMEOUT_SECONDS). Not transient for its caller:
 * the wait is over. `object` names the setting and host:port, never a password.
 */
export class UnreachableError extends FatalError {
  override name = "UnreachableError";
}

/** The first SIGINT/SIGTERM arrived while a command was still waiting or working; it stopped without finishing. */
export class InterruptedError extends Error {
  override name = "InterruptedError";
  readonly signal: NodeJS.Signals;
  readonly help: ErrorHelp;
  constructor(message: string, signal: NodeJS.Signals, help: ErrorHelp = {}) {
    super(message);
    this.signal = signal;
    this.help = help;
  }
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

/** The exit code for a failure (docs/operations.md ("Exit codes")): 2 configuration or usage, 128+n interrupted, 1 anything else. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof ConfigError) return 2;
  if (err instanceof InterruptedError) return 128 + (err.signal === "SIGINT" ? 2 : 15);
  return 1;
}

/**
 * The one line masq prints on stderr for a failure: `masq: <what went wrong> (<setting or object>): <what to do>`.
 * No class names, no stack, no `undefined`: a value that is not an Error says that masq failed unexpectedly.
 */
export function errorLine(err: unknown): string {
  // A library's generic class name inside a wrapped message ("…: Error: connect ECONNREFUSED") tells a person nothing.
  return `masq: ${personText(err)}`.replace(/[\r\n]+\s*/g, " ").replace(/\b(?:Config|Transient|Fatal|Data|Unreachable|Interrupted|Type|Range|Syntax)?Error: /g, "");
}

function personText(err: unknown): string {
  if (err instanceof ConfigError) {
    const h = err.help;
    const detail = h.hint === undefined ? err.problem : `${err.problem}; ${h.hint}`;
    return `${h.what ?? "invalid setting"} (${h.object ?? err.setting}): ${detail}`;
  }
  if (err instanceof TransientError || err instanceof FatalError || err instanceof InterruptedError) {
    return compose(err.help, err.message);
  }
  if (err instanceof DataError) return err.message;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const message = err.message === "" ? "no details were given" : err.message;
    return `unexpected failure: ${message}${typeof code === "string" && code !== "" && !message.includes(code) ? ` (${code})` : ""}`;
  }
  return "unexpected failure (no details were given): this is a bug in masq; please report it with the command you ran";
}

function compose(h: ErrorHelp, message: string): string {
  const what = h.what ?? message;
  const object = h.object === undefined ? "" : ` (${h.object})`;
  // With no separate `what`, the message is the what; a hint follows it.
  const tail = h.hint ?? (h.what === undefined ? undefined : message);
  return tail === undefined || tail === what ? `${what}${object}` : `${what}${object}: ${tail}`;
}
