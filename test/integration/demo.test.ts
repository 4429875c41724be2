import assert from "node:assert/strict";
import { test } from "node:test";
import { assertMatchesSample } from "../helpers/doc-blocks.ts";
import { spawnMasq } from "../helpers/masq-process.ts";

test("masq demo (npm start) runs with no configuration and prints the summary the README shows", async () => {
  // The README's sample is from 5,000 messages (the same seed gives the same counts).
  const proc = spawnMasq(["demo", "--messages", "5000"], { PATH: process.env.PATH, HOME: process.env.HOME });
  const { code } = await proc.exited;
  const out = proc.lines.join("\n");
  assert.equal(code, 0, out);
  assert.match(out, /WARNING: masq demo uses a master key generated for the demo/);
  assert.match(out, /received\s+5,000/);
  const written = Number(/written\s+([\d,]+) rows/.exec(out)?.[1]?.replace(/,/g, ""));
  const quarantined = Number(/quarantined\s+([\d,]+)/.exec(out)?.[1]?.replace(/,/g, ""));
  assert.equal(written + quarantined, 5000);
  assert.ok(quarantined > 100 && quarantined < 500, "about 5% malformed");
  assert.match(out, /vault\s+[1-9][\d,]* distinct ips and [1-9][\d,]* device ids, encrypted under 1 data key\(s\)/);
  assert.match(out, /Largest duplicate groups by masked_device_id/);
  assert.match(out, /\b[0-9a-f]{64}\s+\d+/, "duplicate groups are shown by pseudonym");
  const summary = proc.lines.slice(proc.lines.findIndex((l) => l === "masq demo summary")).filter((l) => !l.startsWith("{"));
  assertMatchesSample("demo-summary", summary.join("\n"));
});
