/**
 * The red-team corpus of issue 9: bodies that a denylist redaction let through in clear (free-text IPs, device ids
 * under keys it did not know), and the amplifying bodies that stalled the pipeline. Shared by the unit tests of the
 * redaction and the integration tests that look into masq.quarantine.body.
 */

/** A login event missing the field the body spells its own way, so it is rejected (missing_field) and quarantined. */
function without(field: "ip" | "device_id", extra: Record<string, unknown>): string {
  const base: Record<string, unknown> = { user_id: "rt-user", app_version: "2.3.0", device_type: "ios", locale: "en", ip: "192.0.2.1", device_id: "rt-kept-device" };
  delete base[field];
  return JSON.stringify({ ...base, ...extra });
}

export interface RedTeamBody {
  name: string;
  body: string;
  /** Text that must not appear in the stored redacted copy (a PII value, or the part of it that identifies). */
  secrets: string[];
}

const freeText: [string, string[]][] = [
  ["client:2001:db8:feed::77", ["2001:db8:feed::77", "feed::77"]],
  ["remote_addr:2001:db8:feed::78", ["2001:db8:feed::78", "feed::78"]],
  ["IP:2001:DB8:FEED::19", ["2001:DB8:FEED::19", "FEED::19"]],
  ["addr=:2001:db8:feed:1:2:3:4:8", ["2001:db8:feed:1:2:3:4:8", "feed:1:2:3:4:8"]],
  ["from 198.051.100.010", ["198.051.100.010", "051.100.010"]],
  ["198.51.100.082 retry", ["198.51.100.082", "51.100.082"]],
  ["login from ::ffff:198.51.100.81 ok", ["198.51.100.81", "51.100.81", "::ffff:"]],
];

const deviceKeys: [string, string][] = [
  ["device.id", "DEVX-311-22-0001"],
  ["device:id", "DEVX-311-22-0002"],
  ["dev_id", "DEVX-311-22-0003"],
  ["deviceIdentifier", "DEVX-311-22-0004"],
  ["device_uuid", "DEVX-311-22-0005"],
  ["udid", "DEVX-311-22-0006"],
  ["device\u200b_id", "DEVX-311-22-0007"], // a zero-width space inside
  ["\uff44\uff45\uff56\uff49\uff43\uff45_id", "DEVX-311-22-0008"], // fullwidth ｄｅｖｉｃｅ_id
  ["DEV\u0130CE_ID", "DEVX-311-22-0009"], // DEVİCE_ID: dotted capital I, which lowercases to "i̇"
];

export const RED_TEAM_BODIES: RedTeamBody[] = [
  ...freeText.map(([text, secrets], i) => ({ name: `free text ${JSON.stringify(text)}`, body: without("ip", { note: text, [`msg${i}`]: { text } }), secrets })),
  ...deviceKeys.map(([key, id]) => ({ name: `device id under ${JSON.stringify(key)}`, body: without("device_id", { [key]: id }), secrets: [id, id.slice(5)] })),
  { name: 'device id as {"device":{"id":…}}', body: without("device_id", { device: { id: "DEVX-311-22-0010" } }), secrets: ["DEVX-311-22-0010", "311-22-0010"] },
  {
    name: "device id and ip in JSON inside a string",
    body: without("device_id", { payload: JSON.stringify({ device_id: "DEVX-311-22-0011", ip: "203.0.113.77" }) }),
    secrets: ["DEVX-311-22-0011", "311-22-0011", "203.0.113.77"],
  },
  { name: "an address as a key", body: without("ip", { "203.0.113.78": "seen" }), secrets: ["203.0.113.78"] },
  { name: "an id as a key", body: without("device_id", { "DEVX-311-22-0012": true }), secrets: ["DEVX-311-22-0012"] },
  { name: "a nested ip field", body: without("ip", { client: { ip: "203.0.113.79", device_id: "DEVX-311-22-0013" } }), secrets: ["203.0.113.79", "DEVX-311-22-0013"] },
  { name: "an ip in an array", body: without("ip", { hops: ["203.0.113.80", "203.0.113.81"] }), secrets: ["203.0.113.80", "203.0.113.81"] },
];

/** The amplifying bodies of issue 9, § 1: valid JSON, rejected, and large. */
export function amplifyingBody(kind: "colons" | "dots", bytes: number, userId: string): string {
  const unit = kind === "colons" ? "1:: " : "1.1.1.1.";
  const head = `{"user_id":${JSON.stringify(userId)},"t":"`;
  const tail = '"}';
  return head + unit.repeat(Math.floor((bytes - head.length - tail.length) / unit.length)) + tail;
}

/**
 * Issue 17, finding 1: refused bodies whose kept-in-clear fields hold what jsonb cannot (a NUL escape, lone
 * surrogates). Each names its user and carries an ip and a device id; a record made from one must still be exported
 * and erased with its user. Each is the exact text sent (escapes as written).
 */
export const UNPARSEABLE_BY_JSONB: { name: string; user: string; ip: string; deviceId: string; body: string }[] = [
  ["NUL locale", '"locale":"\\u0000"', "victim2", "203.0.113.2", "222-33-4444"],
  ["lone high surrogate device_type", '"device_type":"\\ud800"', "victim3", "203.0.113.3", "333-44-5555"],
  ["lone low surrogate app_version", '"app_version":"\\udc00"', "victim4", "203.0.113.4", "444-55-6666"],
  ["NUL inside locale", '"locale":"a\\u0000b"', "victim5", "203.0.113.5", "555-66-7777"],
].map(([name, field, user, ip, deviceId]) => {
  const base: Record<string, string> = { user_id: user!, app_version: "1.0", device_type: "ios", ip: ip!, device_id: deviceId!, locale: "" };
  const [key] = field!.slice(1).split('"');
  const members = Object.entries(base).map(([k, v]) => (k === key ? field! : `${JSON.stringify(k)}:${JSON.stringify(v)}`));
  return { name: name!, user: user!, ip: ip!, deviceId: deviceId!, body: `{${members.join(",")}}` };
});
