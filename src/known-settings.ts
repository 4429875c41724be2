/**
 * The part of masq's configuration a setting belongs to, after the config.ts function that reads it: a command's
 * --help lists the settings of the parts it reads (settingsRead). "harness" is for names masq itself never reads.
 */
export type SettingPart = "queue" | "table" | "keys" | "pseudonym-key" | "pipeline" | "http" | "log-level" | "log-format" | "connect" | "retention" | "migrate" | "harness";

/**
 * Every MASQ_* variable masq reads, with its part. An unknown one is almost always a typo (MASQ_RECIEVERS), which
 * would otherwise pass silently with the default: masq warns, naming the nearest known setting.
 * test/unit/known-settings.test.ts checks that every MASQ_* name in src/ is listed here, and that each part's
 * settings are the ones its config.ts function reads.
 */
export const SETTINGS: Readonly<Record<string, SettingPart>> = {
  MASQ_BATCH_SIZE: "pipeline",
  MASQ_BATCH_WAIT_MS: "pipeline",
  MASQ_CONNECT_TIMEOUT_SECONDS: "connect",
  MASQ_DATA_KEY_MAX_AGE_SECONDS: "keys",
  MASQ_DATA_KEY_MAX_USES: "keys",
  MASQ_HTTP_HOST: "http",
  MASQ_HTTP_PORT: "http",
  MASQ_KEY_PROVIDER: "keys",
  MASQ_KMS_KEY_ID: "keys",
  MASQ_LOG_FORMAT: "log-format",
  MASQ_LOG_LEVEL: "log-level",
  MASQ_MASTER_KEY: "keys",
  MASQ_MASTER_KEY_FILE: "keys",
  MASQ_MASTER_KEY_PREVIOUS: "keys",
  MASQ_MAX_IN_FLIGHT: "pipeline",
  MASQ_MAX_IN_FLIGHT_BYTES: "pipeline",
  MASQ_MIGRATE: "migrate",
  MASQ_PSEUDONYM_KEY: "pseudonym-key",
  MASQ_PSEUDONYM_KEY_FILE: "pseudonym-key",
  MASQ_RECEIVERS: "pipeline",
  MASQ_SHUTDOWN_TIMEOUT_MS: "pipeline",
  MASQ_SQS_PROTOCOL: "queue",
  MASQ_TABLE: "table",
  MASQ_VAULT_RETENTION_DAYS: "retention",
  MASQ_VISIBILITY_TIMEOUT: "pipeline",
  MASQ_WAIT_TIME_SECONDS: "pipeline",
  MASQ_WRITERS: "pipeline",
  MASQ_PREPARE_THREADS: "pipeline",
  // Read by the test harness and CI (test/helpers/moto.ts), never by masq itself; set in the same shells.
  MASQ_MOTO_SERVER: "harness",
  // A test hook masq reads (a prepare thread exits, as a crashed one would); docs/development.md.
  MASQ_TEST_PREPARE_THREAD_EXIT_AFTER: "harness",
  // The same for the SQS thread (it exits as its Nth delete call arrives).
  MASQ_TEST_SQS_THREAD_EXIT_AFTER: "harness",
};

export const KNOWN_SETTINGS: readonly string[] = Object.keys(SETTINGS);

/** The settings of these parts, in the list's order: what a command's --help names (cli.ts). The one derivation. */
export function settingsRead(parts: readonly SettingPart[]): string[] {
  return KNOWN_SETTINGS.filter((name) => parts.includes(SETTINGS[name]!));
}

/** Prefixes of variables that belong to masq's test harness, not to masq. */
const HARNESS_PREFIXES = ["MASQ_TEST_", "MASQ_LOCALSTACK_"];

/** One warning line per unknown MASQ_* variable, naming the nearest known setting when one is close. */
export function unknownSettingWarnings(env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith("MASQ_") || KNOWN_SETTINGS.includes(name) || HARNESS_PREFIXES.some((p) => name.startsWith(p))) continue;
    const nearest = nearestSetting(name);
    out.push(
      nearest === undefined
        ? `masq: warning: unknown setting ignored (${name}): no such setting; docs/configuration.md lists them all`
        : `masq: warning: unknown setting ignored (${name}): did you mean ${nearest}?`,
    );
  }
  return out;
}

export function nearestSetting(name: string): string | undefined {
  let best: { name: string; d: number } | undefined;
  for (const known of KNOWN_SETTINGS) {
    const d = editDistance(name, known);
    if (best === undefined || d < best.d) best = { name: known, d };
  }
  // Past about a third of the name, a "nearest" setting is a guess that misleads more than it helps.
  const limit = Math.max(3, Math.floor((name.length - "MASQ_".length) / 3));
  return best !== undefined && best.d <= limit ? best.name : undefined;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours (IE ↔ EI). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}
