import assert from "node:assert/strict";
import { test } from "node:test";
import { formatUnmasked, type Unmasked } from "../../src/lifecycle/unmask.ts";

const p = "a".repeat(64);
const one = (value: string): Unmasked[] => [{ kind: "device_id", pseudonym: p, value }];

test("JSON gives every value exactly", () => {
  for (const value of ["=cmd|' /C calc'!A0", 'a,"b"\n', "\u001b[31mred", "plain"]) {
    assert.deepEqual(JSON.parse(formatUnmasked(one(value), "json")), one(value));
  }
});

test("CSV quotes commas and quotes (RFC 4180); a line break is escaped like every control character", () => {
  assert.equal(formatUnmasked(one('a,"b"\nc'), "csv"), `kind,pseudonym,value\r\ndevice_id,${p},"a,""b""\\u000ac"\r\n`);
  assert.equal(formatUnmasked(one("123-45-6789"), "csv"), `kind,pseudonym,value\r\ndevice_id,${p},123-45-6789\r\n`);
});

test("CSV defuses a value a spreadsheet would run as a formula", () => {
  for (const value of ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "=HYPERLINK(\"http://x\",\"y\")"]) {
    const line = formatUnmasked(one(value), "csv").split("\r\n")[1]!;
    const field = line.slice(`device_id,${p},`.length);
    const shown = value.replace("\t", "\\u0009");
    assert.ok(field === `'${shown}` || field === `"'${shown.replace(/"/g, '""')}"`, `${JSON.stringify(value)} came out as ${field}`);
  }
});

test("the table shows control characters escaped, C0 and C1 alike, so a terminal does not act on them", () => {
  const out = formatUnmasked(one("a\u001b[2Jb\u009b31mc\u0000"), "table");
  // eslint-disable-next-line no-control-regex -- the point of the test
  assert.ok(!/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/.test(out));
  assert.match(out, /a\\u001b\[2Jb\\u009b31mc\\u0000$/m);
});

test("CSV shows control characters escaped too: ESC and BEL from a value never reach the terminal", () => {
  const out = formatUnmasked(one("dev\u001b]0;pwned\u0007\u009b2J"), "csv");
  // eslint-disable-next-line no-control-regex -- the point of the test
  assert.ok(!/[\u0000-\u0009\u000b\u000c\u000e-\u001f\u007f-\u009f]/.test(out), JSON.stringify(out));
  assert.equal(out.split("\r\n")[1], `device_id,${p},dev\\u001b]0;pwned\\u0007\\u009b2J`);
});
