import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { Metrics } from "../../src/ops/metrics.ts";

/** Every series name masq exports, histogram and summary suffixes included. */
async function exportedSeries(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const m of await new Metrics().registry.getMetricsAsJSON()) {
    names.add(m.name);
    for (const suffix of ["_bucket", "_sum", "_count"]) names.add(`${m.name}${suffix}`);
  }
  return names;
}

function referencedSeries(exprs: string[]): Set<string> {
  return new Set(exprs.flatMap((e) => e.match(/\bmasq_[a-z_]+\b/g) ?? []));
}

test("the Grafana dashboard queries only metrics masq exports", async () => {
  const dash = JSON.parse(readFileSync(new URL("../../deploy/grafana/masq-dashboard.json", import.meta.url), "utf8")) as {
    panels: { targets: { expr: string }[] }[];
  };
  const exprs = dash.panels.flatMap((p) => p.targets.map((t) => t.expr));
  assert.ok(exprs.length >= 10);
  const known = await exportedSeries();
  for (const name of referencedSeries(exprs)) assert.ok(known.has(name), `dashboard uses unknown metric ${name}`);
});

test("the alert rules use only metrics masq exports", async () => {
  const text = readFileSync(new URL("../../deploy/prometheus/masq-alerts.yml", import.meta.url), "utf8");
  const exprs = text.split(/\n\s+expr:/).slice(1).map((chunk) => chunk.split(/\n\s+for:/)[0]!);
  assert.ok(exprs.length >= 5);
  const known = await exportedSeries();
  const used = referencedSeries(exprs);
  assert.ok(used.size > 0);
  for (const name of used) assert.ok(known.has(name), `alert uses unknown metric ${name}`);
});
