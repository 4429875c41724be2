// Writes the settings tables of the docs (docs/configuration.md, docs/deploy.md's Lambda table) from
// src/settings/spec.ts: `node scripts/settings-doc.ts`.
import { readFileSync, writeFileSync } from "node:fs";
import { GENERATED_TABLES, withTable } from "../src/settings/derived.ts";

for (const t of GENERATED_TABLES) {
  const file = new URL(`../${t.file}`, import.meta.url);
  const before = readFileSync(file, "utf8");
  const after = withTable(before, t);
  if (after === before) console.log(`${t.file}: the settings table is up to date`);
  else {
    writeFileSync(file, after);
    console.log(`${t.file}: the settings table was rewritten from src/settings/spec.ts`);
  }
}
