// Writes the settings table of docs/configuration.md from src/settings/spec.ts: `node scripts/settings-doc.ts`.
import { readFileSync, writeFileSync } from "node:fs";
import { withSettingsTable } from "../src/settings/derived.ts";

const file = new URL("../docs/configuration.md", import.meta.url);
const before = readFileSync(file, "utf8");
const after = withSettingsTable(before);
if (after === before) console.log("docs/configuration.md: the settings table is up to date");
else {
  writeFileSync(file, after);
  console.log("docs/configuration.md: the settings table was rewritten from src/settings/spec.ts");
}
