/**
 * app_version "MAJOR[.MINOR[.PATCH]]", each part 0–999, stored as MAJOR·1,000,000 + MINOR·1,000 + PATCH.
 * The encoding preserves order (2.10.0 > 2.9.9) and fits a Postgres integer (max 999,999,999).
 * Leading zeros are accepted ("2.03" is 2.3.0), as most version parsers do.
 * The SQL function masq.app_version_text(integer) in migrations/ is the inverse.
 */
const APP_VERSION = /^(\d{1,3})(?:\.(\d{1,3})(?:\.(\d{1,3}))?)?$/;

export const MAX_APP_VERSION = 999_999_999;

/** Returns the integer encoding, or null when the text is not a valid version. */
export function encodeAppVersion(text: string): number | null {
  const match = APP_VERSION.exec(text);
  if (match === null) return null;
  const major = Number(match[1]);
  const minor = match[2] === undefined ? 0 : Number(match[2]);
  const patch = match[3] === undefined ? 0 : Number(match[3]);
  return major * 1_000_000 + minor * 1_000 + patch;
}

/** The inverse of encodeAppVersion, always in MAJOR.MINOR.PATCH form. */
export function decodeAppVersion(value: number): string {
  if (!Number.isInteger(value) || value < 0 || value > MAX_APP_VERSION) {
    throw new RangeError(`not an encoded app_version: ${value}`);
  }
  const major = Math.floor(value / 1_000_000);
  const minor = Math.floor(value / 1_000) % 1_000;
  const patch = value % 1_000;
  return `${major}.${minor}.${patch}`;
}
