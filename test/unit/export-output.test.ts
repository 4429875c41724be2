import assert from "node:assert/strict";
import { test } from "node:test";
import { ExportWriter, type ExportLine } from "../../src/lifecycle/export-output.ts";

const p = "a".repeat(64);
const row = (device_id: string | null, ip: string | null = "192.0.2.1"): ExportLine => ({
  source: "row",
  user_id: "u-1",
  create_date: "2026-11-30",
  device_type: "ios",
  locale: null,
  app_version: "1.2.3",
  masked_ip: p,
  ip,
  masked_device_id: p,
  device_id,
});
const quarantined: ExportLine = { source: "quarantined", user_id: "u-1", message_id: "m-1", reason: "invalid_ip", received_at: "2026-11-30T10:00:00.000Z", replayed_at: null, original: '{"ip":"1.2.3.4.5"}\n', masked_row: null };
/** A db_rejected record: no original, the masked row the table refused with its values (a hostile device id). */
const rejected: ExportLine = {
  source: "quarantined",
  user_id: "u-1",
  message_id: "m-2",
  reason: "db_rejected",
  received_at: "2026-11-30T11:00:00.000Z",
  replayed_at: null,
  original: null,
  masked_row: { create_date: "2026-11-30", device_type: "ios", locale: null, app_version: "0.0.7", masked_ip: p, ip: null, masked_device_id: p, device_id: "=cmd\u001b[2J" },
};

/** What a writer prints for these pages, begin to end. */
function render(format: "table" | "csv" | "json", pages: ExportLine[][]): string {
  const w = new ExportWriter(format);
  return w.begin() + pages.map((lines) => w.page(lines)).join("") + w.end();
}

test("JSON is one array across pages, every value exact", () => {
  const lines = [row("\u001b[31m=cmd"), row(null, null), quarantined, rejected];
  assert.deepEqual(JSON.parse(render("json", [lines.slice(0, 1), [], lines.slice(1)])), lines);
  assert.deepEqual(JSON.parse(render("json", [])), []);
});

test("CSV: one header, rows and quarantined messages in the same columns, control characters escaped, formulas defused", () => {
  const out = render("csv", [[row("=HYPERLINK(\"x\")\u0007")], [quarantined, rejected]]).split("\r\n");
  assert.equal(out[0], "source,user_id,create_date,device_type,locale,app_version,masked_ip,ip,masked_device_id,device_id,message_id,quarantine_reason,received_at,replayed_at,original");
  assert.equal(out[1], `row,u-1,2026-11-30,ios,,1.2.3,${p},192.0.2.1,${p},"'=HYPERLINK(""x"")\\u0007",,,,,`);
  assert.equal(out[2], `quarantined,u-1,,,,,,,,,m-1,invalid_ip,2026-11-30T10:00:00.000Z,,"{""ip"":""1.2.3.4.5""}\\u000a"`);
  assert.equal(out[3], `quarantined,u-1,2026-11-30,ios,,0.0.7,${p},,${p},'=cmd\\u001b[2J,m-2,db_rejected,2026-11-30T11:00:00.000Z,,`);
  assert.equal(out.length, 5);
});

test("the table escapes control characters (C0 and C1) and says which values the vault does not hold", () => {
  const out = render("table", [[row("a\u001b]0;x\u0007\u009b31m"), row("d", null)], [quarantined, rejected]]);
  // eslint-disable-next-line no-control-regex -- the point of the test
  assert.ok(!/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/.test(out));
  assert.match(out, /a\\u001b\]0;x\\u0007\\u009b31m$/m);
  assert.match(out, /\(not in vault\)/);
  assert.match(out, /^quarantined {2}2026-11-30T10:00:00.000Z {2}m-1 {2}invalid_ip {2}original: \{"ip":"1\.2\.3\.4\.5"\}\\u000a$/m);
  assert.ok(out.includes(`\nquarantined  2026-11-30T11:00:00.000Z  m-2  db_rejected  no original kept; the row the table refused: 2026-11-30  ios  -  0.0.7  ${p}  (not in vault)  ${p}  =cmd\\u001b[2J\n`));
});
