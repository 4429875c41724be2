import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { test } from "node:test";
import type { Command } from "commander";
import { buildProgram } from "../../src/cli.ts";
import { LAMBDA_TABLE, withSettingsTable, withTable } from "../../src/settings/derived.ts";
import { targetTableDdl } from "../../src/db/tables.ts";
import { Metrics } from "../../src/ops/metrics.ts";
import { createPseudonymizer } from "../../src/ingest/pseudonymize.ts";
import { prepareOutcome } from "../../src/ingest/prepare.ts";
import { CONTRACT_REASON_CODES } from "../../src/contracts/compile-contract.ts";
import { docBlock, docFiles, parseBlocks, REPO_ROOT } from "../helpers/doc-blocks.ts";

/**
 * The reference pages are kept in step with the code: the settings table with the spec it is made from,
 * metrics with the registry, commands and exit codes with the CLI, masq's tables with the migrations, the source
 * tree with the checkout, links with their targets. Each failure names what to add or remove, and where.
 */
const read = (f: string) => readFileSync(`${REPO_ROOT}${f}`, "utf8");

function walk(dir: string, ext: string): string[] {
  return readdirSync(`${REPO_ROOT}${dir}`, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(`${dir}/${e.name}`, ext) : e.name.endsWith(ext) ? [`${dir}/${e.name}`] : [],
  );
}

/** The rows of the first table in `markdown` whose header row contains `header`, as cells (pipes in code escaped as \|). */
function tableRows(markdown: string, header: string): string[][] {
  const lines = markdown.split("\n");
  const start = lines.findIndex((l) => l.startsWith("|") && l.includes(header));
  assert.ok(start >= 0, `no table with a "${header}" column`);
  const rows: string[][] = [];
  for (let i = start + 2; i < lines.length && lines[i]!.startsWith("|"); i++) {
    rows.push(
      lines[i]!
        .replaceAll("\\|", "\u0000")
        .split("|")
        .slice(1, -1)
        .map((c) => c.replaceAll("\u0000", "|").trim()),
    );
  }
  return rows;
}

const codeSpans = (cell: string): string[] => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);

// ---- settings ---------------------------------------------------------------------------------------------------

/** Environment variables masq reads that are not settings for a user: set by masq itself for its own children. */
const INTERNAL_ENV: Record<string, string> = {
  FAUXQS_PORT: "set by masq for the fauxqs child process it starts (src/ops/fauxqs.ts)",
  FAUXQS_DATA_DIR: "set by masq for the fauxqs child process it starts",
};
// Whole names only: a prefix such as "MASQ_TEST_" ends in an underscore and is not a variable.
const ENV_NAME = /^(?:MASQ_[A-Z0-9_]*[A-Z0-9]|AWS_[A-Z0-9_]*[A-Z0-9]|QUEUE_URL|DATABASE_URL|PG[A-Z]+)$/;

/** Every environment variable the code under src/ reads, with a file that reads it. */
function envReadByCode(): Map<string, string> {
  const found = new Map<string, string>();
  for (const file of walk("src", ".ts")) {
    const text = read(file);
    const add = (name: string) => found.has(name) || found.set(name, file);
    for (const m of text.matchAll(/\benv\.([A-Z][A-Z0-9_]*)\b/g)) add(m[1]!);
    for (const m of text.matchAll(/\benv\[\s*["'`]([A-Z][A-Z0-9_]*)["'`]\s*\]/g)) add(m[1]!);
    // Names passed as strings (integer(src, "batchSize", "MASQ_BATCH_SIZE", …), .env("QUEUE_URL"), ConfigError("…")).
    for (const m of text.matchAll(/["'`]([A-Z][A-Z0-9_]+)["'`]/g)) if (ENV_NAME.test(m[1]!)) add(m[1]!);
  }
  return found;
}

/** Variables only the tests, scripts and CI read (MASQ_MOTO_SERVER, …): documented for developers, not settings. */
function envReadByTests(): Set<string> {
  const text = [...walk("test", ".ts"), ...walk("scripts", ""), ".ci/run"].map(read).join("\n");
  return new Set([...text.matchAll(/\bMASQ_[A-Z0-9_]*[A-Z0-9]\b/g)].map((m) => m[0]));
}

const configuration = read("docs/configuration.md");

test("the settings table in docs/configuration.md is the one made from src/settings/spec.ts", () => {
  // The spec is the one declaration of each setting; the reader and the command line are made from it too, and
  // test/unit/config.test.ts and cli.test.ts check that they follow it.
  assert.equal(configuration, withSettingsTable(configuration), "run: node scripts/settings-doc.ts");
});

test("the Lambda settings table in docs/deploy.md is the one made from src/settings/spec.ts", () => {
  const deploy = read(LAMBDA_TABLE.file);
  assert.equal(deploy, withTable(deploy, LAMBDA_TABLE), "run: node scripts/settings-doc.ts");
});

test("every environment variable masq reads is documented in docs/configuration.md", () => {
  const spans = (text: string) => new Set(codeSpans(text.replace(/```[\s\S]*?```/g, "")).flatMap((s) => s.split(/[\s,=]+/)));
  const documented = spans(configuration);
  // Variables of the test harness and CI (MASQ_MOTO_SERVER, …) belong in docs/development.md instead.
  const forDevelopers = spans(read("docs/development.md"));
  const byTests = envReadByTests();
  const missing = [...envReadByCode()]
    .filter(([name]) => !documented.has(name) && !(name in INTERNAL_ENV) && !(byTests.has(name) && forDevelopers.has(name)))
    .map(([name, file]) => `${name} (read in ${file})`);
  assert.deepEqual(missing, [], "declare these in src/settings/spec.ts, or add them to the table of variables read by libraries in docs/configuration.md");
});

test("every MASQ_* name in the docs is one masq or its tests read", () => {
  const readByCode = envReadByCode();
  const readByTests = envReadByTests();
  // A MASQ_* name that masq does not read is a typo or a setting that is gone.
  const stale = docFiles().flatMap((f) => [...read(f).matchAll(/\bMASQ_[A-Z0-9_]*[A-Z0-9]\b/g)].map((m) => `${f}: ${m[0]}`)).filter((s) => !readByCode.has(s.split(": ")[1]!) && !readByTests.has(s.split(": ")[1]!));
  assert.deepEqual([...new Set(stale)], [], "these MASQ_* names appear in the docs but masq reads no such variable");
});

function allCommands(cmd: Command, path: string[] = []): { path: string[]; cmd: Command }[] {
  return cmd.commands.flatMap((c) => [{ path: [...path, c.name()], cmd: c }, ...allCommands(c, [...path, c.name()])]);
}

const program = buildProgram();
const commands = allCommands(program);

// ---- commands and exit codes ------------------------------------------------------------------------------------

const operations = read("docs/operations.md");

test("the commands table in docs/operations.md lists exactly the commands masq has", () => {
  const documented = new Set<string>();
  for (const row of tableRows(operations, "| command |")) {
    const words = (codeSpans(row[0] ?? "")[0] ?? "").split(" ").slice(1);
    const [first, second] = words;
    for (const s of second && !second.startsWith("-") && !second.startsWith("<") ? second.split("|") : [""]) documented.add([first, s].filter(Boolean).join(" "));
  }
  // A group (quarantine, rotate) is documented through its subcommands.
  const leaves = commands.filter(({ cmd }) => cmd.commands.length === 0).map(({ path }) => path.join(" "));
  assert.deepEqual(leaves.filter((c) => !documented.has(c)), [], "commands missing from the table in docs/operations.md");
  assert.deepEqual([...documented].filter((c) => !leaves.includes(c)), [], "the table in docs/operations.md lists commands masq does not have");
});

test("every exit code the code uses is in each exit-code table of the docs", () => {
  const tables = docFiles().filter((f) => read(f).includes("| exit code |"));
  assert.ok(tables.length > 0, "no documentation file has a table with an exit code column");
  const used = new Set<number>();
  for (const file of walk("src", ".ts")) {
    const text = read(file);
    for (const m of text.matchAll(/\b(?:process\.exit|finish)\(([^;]*)\)/g)) {
      if (/128 \+/.test(m[1]!)) {
        for (const n of m[1]!.matchAll(/\b(\d+)\b/g)) if (Number(n[1]) !== 128) used.add(128 + Number(n[1]));
      }
      else for (const n of m[1]!.matchAll(/(?<![\w.])(\d+)(?![\w.])/g)) used.add(Number(n[1]));
    }
    if (file.startsWith("src/commands/")) for (const m of text.matchAll(/\breturn (\d+);/g)) used.add(Number(m[1]));
  }
  assert.ok(used.has(2) && used.has(130) && used.has(143), `exit codes found: ${[...used].join(", ")}`);
  for (const f of tables) {
    const documented = new Set(tableRows(read(f), "| exit code |").flatMap((r) => (r[0] ?? "").split("/").map((c) => Number(c.trim()))));
    assert.deepEqual([...used].filter((c) => !documented.has(c)), [], `${f}'s exit-code table lacks these codes that masq uses`);
  }
});

// ---- metrics ----------------------------------------------------------------------------------------------------

test("docs/metrics.md lists every metric of the registry, with its type and labels, and no other", async () => {
  const registry = new Metrics().registry;
  const rows = tableRows(read("docs/metrics.md"), "| metric |").map((r) => ({ names: codeSpans(r[0] ?? ""), type: (r[1] ?? "").trim() }));
  const exact = new Map<string, { labels: string[]; type: string }>();
  const wildcards: RegExp[] = [];
  for (const r of rows) {
    for (const n of r.names) {
      if (n.endsWith("*")) wildcards.push(new RegExp(`^${n.slice(0, -1)}`));
      else {
        const m = /^([a-z_]+)(?:\{([^}]*)\})?$/.exec(n);
        assert.ok(m, `unreadable metric name in docs/metrics.md: ${n}`);
        exact.set(m[1]!, { labels: (m[2] ?? "").split(",").map((l) => l.trim()).filter(Boolean).sort(), type: r.type });
      }
    }
  }
  const problems: string[] = [];
  const exported = await registry.getMetricsAsJSON();
  for (const m of exported) {
    const doc = exact.get(m.name);
    if (!doc) {
      if (!wildcards.some((w) => w.test(m.name))) problems.push(`${m.name} (${m.type}) is not documented`);
      continue;
    }
    if (doc.type !== String(m.type)) problems.push(`${m.name}: documented as ${doc.type}, the registry has a ${m.type}`);
    const labels = [...((registry.getSingleMetric(m.name) as unknown as { labelNames?: string[] }).labelNames ?? [])].sort();
    if (labels.join(",") !== doc.labels.join(",")) problems.push(`${m.name}: documented labels {${doc.labels.join(",")}}, the registry has {${labels.join(",")}}`);
  }
  const names = new Set(exported.map((m) => m.name));
  for (const name of exact.keys()) if (!names.has(name)) problems.push(`${name} is documented but masq does not export it`);
  for (const w of wildcards) if (![...names].some((n) => w.test(n))) problems.push(`${w.source}* matches no exported metric`);
  assert.deepEqual(problems, [], "docs/metrics.md and src/ops/metrics.ts disagree");
});

test("docs/metrics.md's table of paths is what the HTTP listener serves", () => {
  const served = [...read("src/ops/http.ts").matchAll(/case "(\/[a-z]*)":/g)].map((m) => m[1]!).sort();
  const documented = tableRows(read("docs/metrics.md"), "| path |").map((r) => codeSpans(r[0] ?? "")[0]!).sort();
  assert.ok(served.length >= 3, `paths found in src/ops/http.ts: ${served.join(", ")}`);
  assert.deepEqual(documented, served, "docs/metrics.md and src/ops/http.ts disagree on the listener's paths");
});

// ---- masq's schema ----------------------------------------------------------------------------------------------

/**
 * Tables, views and functions of schema masq after the baseline migrations (and src/: schema_migrations), in order.
 * migrations/legacy/ only upgrades older databases to the same schema.
 */
function schemaObjects(): Set<string> {
  const objects = new Set<string>();
  const baseline = walk("migrations", ".sql").filter((f) => !f.startsWith("migrations/legacy/"));
  const sources = [...baseline.sort(), ...walk("src", ".ts")].map(read).join("\n");
  const ddl = /\b(CREATE|DROP)\s+(?:OR\s+REPLACE\s+)?(?:UNLOGGED\s+)?(?:TABLE|FUNCTION|PROCEDURE|VIEW)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?masq\.(\w+)/gi;
  for (const m of sources.matchAll(ddl)) {
    if (m[1]!.toUpperCase() === "CREATE") objects.add(`masq.${m[2]}`);
    else objects.delete(`masq.${m[2]}`);
  }
  return objects;
}

test("docs/data-model.md lists every table and function of schema masq, and only those", () => {
  const objects = schemaObjects();
  assert.ok(objects.size >= 10, `found ${[...objects].join(", ")}`);
  const documented = new Set(tableRows(read("docs/data-model.md"), "| object |").map((r) => (codeSpans(r[0] ?? "")[0] ?? "").replace(/\(.*$/, "")));
  assert.deepEqual([...objects].filter((o) => !documented.has(o)), [], "add these to the table of masq's schema in docs/data-model.md");
  assert.deepEqual([...documented].filter((o) => !objects.has(o)), [], "docs/data-model.md lists these, but no migration creates them");
});

test("every masq.<name> the docs mention is a table or function that exists", () => {
  const objects = schemaObjects();
  const roles = new Set(["masq_ingest", "masq_unmask"]);
  const bad: string[] = [];
  for (const f of docFiles()) {
    for (const m of read(f).matchAll(/`[^`]*`/g)) {
      for (const ref of m[0].matchAll(/\bmasq\.([a-z_]+)/g)) {
        if (!objects.has(`masq.${ref[1]}`) && !roles.has(ref[1]!) && ref[1] !== "migrate") bad.push(`${f}: masq.${ref[1]}`);
      }
    }
  }
  assert.deepEqual([...new Set(bad)], [], "the docs name objects of schema masq that no migration creates");
});

test("the DDL in docs/data-model.md is the one masq runs when the table is absent", () => {
  const ddl = targetTableDdl({ schema: "public", name: "user_logins" }).replace(/^CREATE TABLE IF NOT EXISTS \S+?\(/, "CREATE TABLE IF NOT EXISTS user_logins(");
  assert.equal(docBlock("target-table-ddl", "sample").text.trim(), `${ddl};`);
});

test("docs/data-model.md's reason codes are the ones masq quarantines with", () => {
  // The statement that lists the codes (a union type or an array), wherever "invalid_json" is first named.
  const text = walk("src", ".ts")
    // Contracts give these codes too (compile-contract.ts adds its own, CONTRACT_REASON_CODES, below).
    .filter((f) => f !== "src/ops/demo.ts" && !f.startsWith("src/contracts/"))
    .map(read)
    .find((t) => t.includes('"invalid_json"'));
  assert.ok(text, 'no source file names the reason code "invalid_json"');
  const at = text.indexOf('"invalid_json"');
  const statement = text.slice(text.lastIndexOf("=", at), text.indexOf(";", at));
  const codes = [...[...statement.matchAll(/"([a-z_]+)"/g)].map((m) => m[1]!), ...CONTRACT_REASON_CODES].sort();
  const documented = tableRows(read("docs/data-model.md"), "| reason |").map((r) => codeSpans(r[0] ?? "")[0]!).sort();
  assert.ok(codes.length >= 10, `reason codes found: ${codes.join(", ")}`);
  assert.deepEqual(documented, codes, "docs/data-model.md's table of reasons and the code's reason codes differ");
});

test("docs/data-model.md does not say a quarantined body is dropped where masq keeps its original", () => {
  // Every reason prepareOutcome gives keeps the original for the vault to seal (db_rejected, decided by the
  // database later, keeps the masked row instead); the doc once said an invalid_json body was "not stored".
  const at = new Date("2026-11-24T10:00:00Z");
  const p = createPseudonymizer(new Uint8Array(32).fill(7));
  for (const body of ["{not json", "[1]", '{"user_id":"u"}']) {
    const o = prepareOutcome({ messageId: "m-1", body, sentAt: at, receivedAt: at }, p);
    assert.ok(o.kind === "quarantine" && o.originalBody === body, `prepareOutcome keeps the original of ${body}`);
  }
  const claims = tableRows(read("docs/data-model.md"), "| reason |")
    .filter((r) => codeSpans(r[0] ?? "")[0] !== "db_rejected" && /not stored|without its body|only its length/i.test(r[1] ?? ""))
    .map((r) => r.join(" | "));
  assert.deepEqual(claims, [], "docs/data-model.md says these reasons drop a body whose original masq keeps encrypted");
});

// ---- the source tree --------------------------------------------------------------------------------------------

/** The tree in docs/development.md: each path it names, with its description (continuation lines joined). */
function developmentTree(): { path: string; description: string }[] {
  const tree = parseBlocks("docs/development.md", read("docs/development.md")).find((b) => b.lang === "" && b.text.includes("src/"));
  assert.ok(tree, "docs/development.md has the tree as an untagged block");
  const entries: { path: string; description: string }[] = [];
  const stack: string[] = [];
  for (const line of tree.text.split("\n")) {
    const m = /^( *)(\S+)\s*(.*)$/.exec(line);
    if (!m) continue;
    if (m[1]!.length > 20) {
      // a continuation of a description
      if (entries.length > 0) entries[entries.length - 1]!.description += ` ${line.trim()}`;
      continue;
    }
    const depth = m[1]!.length / 2;
    stack.length = depth;
    stack.push(m[2]!);
    entries.push({ path: stack.join("").replace(/\/+/g, "/"), description: m[3]! });
  }
  return entries;
}

test("the tree in docs/development.md names every directory of src/, deploy/, scripts/ and test/, and only what exists", () => {
  const paths = developmentTree().map((e) => e.path);
  const missing = paths.filter((p) => !existsSync(`${REPO_ROOT}${p.replace(/\/$/, "")}`));
  assert.deepEqual(missing, [], "docs/development.md's tree names paths that do not exist");
  const named = new Set(paths.map((p) => p.replace(/\/$/, "")));
  const dirs = ["src", "deploy", "scripts", "test"].flatMap((top) =>
    readdirSync(`${REPO_ROOT}${top}`)
      .filter((d) => statSync(`${REPO_ROOT}${top}/${d}`).isDirectory())
      .map((d) => `${top}/${d}`),
  );
  assert.deepEqual(dirs.filter((d) => !named.has(d)), [], "add these directories to the tree in docs/development.md");
});

test("the tree in docs/development.md names every file of src/: each top-level file on its line, each folder's files in its description", () => {
  const entries = developmentTree();
  const problems: string[] = [];
  for (const e of readdirSync(`${REPO_ROOT}src`, { withFileTypes: true })) {
    if (e.isFile() && e.name.endsWith(".ts") && !entries.some((t) => t.path === `src/${e.name}`)) problems.push(`src/${e.name}: no line of its own in the tree`);
    if (!e.isDirectory()) continue;
    const entry = entries.find((t) => t.path === `src/${e.name}/`);
    if (entry === undefined) continue; // the test above names the folder
    const files = readdirSync(`${REPO_ROOT}src/${e.name}`).filter((f) => f.endsWith(".ts"));
    const described = new Set([...entry.description.matchAll(/(?<![\w./-])([\w-]+\.ts)\b/g)].map((m) => m[1]!));
    for (const f of files) if (!described.has(f)) problems.push(`src/${e.name}/${f}: not named in the description of src/${e.name}/`);
    for (const f of described) if (!files.includes(f)) problems.push(`src/${e.name}/: its description names ${f}, which is not in the folder`);
  }
  assert.deepEqual(problems, [], "docs/development.md's tree and src/ differ: say in a few words what each file is for");
});

// ---- docs/design.md: the layout and the audited commands' routes ---------------------------------------------

/** The section of a markdown file under `heading` (## level), up to the next heading of that level. */
function section(markdown: string, heading: string): string {
  const start = markdown.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `no section "## ${heading}"`);
  const end = markdown.indexOf("\n## ", start + 1);
  return markdown.slice(start, end < 0 ? undefined : end);
}

/** Which folders of src/ import from which (type imports too; the top-level files of src/ left out), "a -> b". */
function folderImports(): Map<string, string> {
  const edges = new Map<string, string>();
  const folderOf = (f: string) => /^src\/([^/]+)\//.exec(f)?.[1];
  for (const file of walk("src", ".ts")) {
    const from = folderOf(file);
    if (from === undefined) continue;
    const text = read(file).replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
    const specs = [
      ...[...text.matchAll(/(?:^|[;\n])\s*(?:import|export)\s[^;'"]*?from\s*["'](\.[^"']+)["']/g)].map((m) => m[1]!),
      ...[...text.matchAll(/\bimport\(\s*["'](\.[^"']+)["']\s*\)/g)].map((m) => m[1]!),
    ];
    for (const spec of specs) {
      const target = new URL(spec, `file:///${file}`).pathname.slice(1);
      const to = folderOf(target);
      if (to !== undefined && to !== from && !edges.has(`${from} -> ${to}`)) edges.set(`${from} -> ${to}`, `${file} imports ${target}`);
    }
  }
  return edges;
}

test("the layout drawn in docs/design.md has one box per folder of src/ and the arrows the imports make", () => {
  const block = parseBlocks("docs/design.md", section(read("docs/design.md"), "The layout")).find((b) => b.lang === "mermaid");
  assert.ok(block, 'docs/design.md, "The layout", has the layout as a mermaid block');
  const boxes = [...block.text.matchAll(/^\s*(\w+)\[/gm)].map((m) => m[1]!).sort();
  const folders = readdirSync(`${REPO_ROOT}src`, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  assert.deepEqual(boxes, folders, "one box per folder of src/, named after it");
  const drawn = new Set([...block.text.matchAll(/^\s*(\w+)\s*(?:-->|-\.->)(?:\|[^|]*\|)?\s*(\w+)\s*$/gm)].map((m) => `${m[1]} -> ${m[2]}`));
  const imports = folderImports();
  assert.deepEqual([...imports].filter(([e]) => !drawn.has(e)).map(([e, why]) => `${e} (${why})`), [], "draw these arrows in docs/design.md's layout");
  assert.deepEqual([...drawn].filter((e) => !imports.has(e)), [], "docs/design.md's layout draws these arrows, but no file of the first folder imports from the second");
});

test("each audited command's SQL functions in docs/design.md are defined by the migration named, and called from a file of its row", () => {
  const rows = tableRows(section(read("docs/design.md"), "An audited command"), "| command |");
  assert.ok(rows.length >= 8, `found ${rows.length} commands`);
  const problems: string[] = [];
  for (const row of rows) {
    const command = codeSpans(row[0] ?? "")[0];
    // Files as the row names them: src/…, a folder of src/ and a file, or (the operation) a file of src/lifecycle/.
    const files = row.slice(1, 4).flatMap(codeSpans).filter((c) => c.endsWith(".ts")).map((c) => (c.startsWith("src/") ? c : c.includes("/") ? `src/${c}` : `src/lifecycle/${c}`));
    const code = files.filter((f) => existsSync(`${REPO_ROOT}${f}`)).map(read).join("\n");
    let migration: string | undefined;
    for (const span of codeSpans(row[4] ?? "")) {
      if (span.endsWith(".sql")) {
        migration = span;
        if (!existsSync(`${REPO_ROOT}migrations/${span}`)) problems.push(`${command}: migrations/${span} does not exist`);
        continue;
      }
      const fn = /^masq\.(\w+)$/.exec(span)?.[1];
      if (fn === undefined) continue;
      if (migration === undefined || !new RegExp(`CREATE\\s+(?:OR\\s+REPLACE\\s+)?FUNCTION\\s+masq\\.${fn}\\s*\\(`, "i").test(existsSync(`${REPO_ROOT}migrations/${migration}`) ? read(`migrations/${migration}`) : "")) {
        problems.push(`${command}: masq.${fn} is not defined in ${migration ?? "(no migration named before it)"}`);
      }
      if (!new RegExp(`\\bmasq\\.${fn}\\b`).test(code)) problems.push(`${command}: none of ${files.join(", ")} calls masq.${fn}`);
    }
  }
  assert.deepEqual(problems, [], "docs/design.md's table of the audited commands' routes and the code or the migrations differ");
});

/** The files of the checkout a doc may name: everything under these directories, and the top-level files. */
function checkoutFiles(): string[] {
  const top = readdirSync(REPO_ROOT, { withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => e.name);
  return [...top, ...["src", "scripts", "test", "bench", "deploy", "migrations", "contracts", "bin"].flatMap((d) => walk(d, ""))];
}

test("every source file the docs name exists: src/ paths, folder/file.ts under src/, and bare file names", () => {
  const srcDirs = new Set(readdirSync(`${REPO_ROOT}src`, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name));
  // Folders src/ had before its files were merged by idea: a path in one of them is stale even without "src/".
  const formerDirs = ["sink", "source", "vault", "http", "metrics", "progress", "demo", "audit", "lambda", "mask", "retention", "rotation", "runner", "transform"];
  const names = new Set(checkoutFiles().map((f) => f.slice(f.lastIndexOf("/") + 1)));
  const stale: string[] = [];
  for (const f of docFiles()) {
    const text = read(f);
    // src/a/b.ts, src/a/ (a file or a folder; "src/ingest/lambda-handler.handler" names a function, its file is checked)
    for (const m of text.matchAll(/(?<![\w./-])src\/([\w./-]*[\w/])/g)) {
      const p = `src/${m[1]!.replace(/\.handler$/, ".ts")}`;
      if (!existsSync(`${REPO_ROOT}${p.replace(/\/$/, "")}`)) stale.push(`${f}: ${p}`);
    }
    // ingest/runner.ts: a folder of src/ (today's or a former one) and a file in it, without the src/ prefix.
    for (const m of text.matchAll(/(?<![\w./-])([a-z]+)\/([\w.-]+\.ts)\b/g)) {
      if ((srcDirs.has(m[1]!) || formerDirs.includes(m[1]!)) && !existsSync(`${REPO_ROOT}src/${m[1]}/${m[2]}`)) stale.push(`${f}: ${m[1]}/${m[2]}`);
    }
    // runner.ts, alone: a file of the checkout by that name.
    for (const m of text.matchAll(/(?<![\w./-])([\w-]+(?:\.[\w-]+)*\.ts)\b/g)) if (!names.has(m[1]!)) stale.push(`${f}: ${m[1]}`);
  }
  assert.deepEqual([...new Set(stale)], [], "the docs name these source files, which do not exist (moved or merged? /src/ has the new names)");
});

// ---- links, commits, internal references --------------------------------------------------------------------------

function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

test("every local link in the docs points at a file that exists, and at a heading it has", () => {
  const broken: string[] = [];
  for (const f of docFiles()) {
    const dir = f.includes("/") ? f.slice(0, f.lastIndexOf("/") + 1) : "";
    const text = read(f).replace(/```[\s\S]*?```/g, "");
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1]!;
      if (/^[a-z]+:/.test(target)) continue;
      const [path, anchor] = target.split("#") as [string, string | undefined];
      const file = path === "" ? f : new URL(path, `file:///${dir}`).pathname.slice(1);
      if (!existsSync(`${REPO_ROOT}${file}`)) {
        broken.push(`${f}: ${target} (no such file)`);
        continue;
      }
      if (anchor !== undefined && file.endsWith(".md")) {
        const headings = read(file)
          .replace(/```[\s\S]*?```/g, "")
          .split("\n")
          .filter((l) => /^#{1,6} /.test(l))
          .map((l) => slug(l.replace(/^#+ /, "")));
        if (!headings.includes(anchor)) broken.push(`${f}: ${target} (no heading #${anchor} in ${file})`);
      }
    }
  }
  assert.deepEqual(broken, [], "broken links");
});

test("every section that code, scripts and deploy files point to (docs/x.md, \"Heading\") exists", () => {
  const bad: string[] = [];
  for (const f of [...walk("src", ".ts"), ...walk("scripts", ""), ...walk("deploy", "")]) {
    for (const m of read(f).matchAll(/\b(README|SECURITY|docs\/[a-z-]+)(?:\.md)?,? "([^"]+)"/g)) {
      const doc = `${m[1]}.md`;
      const headings = existsSync(`${REPO_ROOT}${doc}`)
        ? read(doc)
            .split("\n")
            .filter((l) => /^#{1,6} /.test(l))
            .map((l) => l.replace(/^#+ /, "").trim().toLowerCase())
        : [];
      if (!headings.includes(m[2]!.replace(/\s+/g, " ").toLowerCase())) bad.push(`${f}: ${doc}, "${m[2]}"`);
    }
  }
  assert.deepEqual(bad, [], "these point to a section that is not there (moved, renamed or never written)");
});

test("every commit the docs cite is in the history", (t) => {
  let shallow: string;
  try {
    shallow = execFileSync("git", ["rev-parse", "--is-shallow-repository"], { cwd: REPO_ROOT, encoding: "utf8" }).trim();
  } catch {
    t.skip("not a git checkout");
    return;
  }
  if (shallow === "true") {
    t.skip("a shallow clone does not hold the history");
    return;
  }
  const missing: string[] = [];
  for (const f of docFiles()) {
    // "(5e600ac)", "commit 5e600ac", "in 3059ee5"; with a letter, so that numbers such as (2003000) are not taken.
    for (const m of read(f).matchAll(/\((?=[0-9]*[a-f])([0-9a-f]{7,40})\)|\b(?:commits?|in) (?=[0-9]*[a-f])([0-9a-f]{7,40})\b/g)) {
      const sha = m[1] ?? m[2]!;
      try {
        execFileSync("git", ["cat-file", "-e", `${sha}^{commit}`], { cwd: REPO_ROOT, stdio: "ignore" });
      } catch {
        missing.push(`${f}: ${sha}`);
      }
    }
  }
  assert.deepEqual(missing, [], "the docs cite commits that are not in this repository's history");
});

test("no internal issue numbers in the docs or in what masq prints", () => {
  const pattern = /\b(?:issue|ticket) #?\d+\b|\b(?:the|a) (?:foundation|later|edges|hardening) issue\b|\bthe issue's\b/i;
  const hits: string[] = [];
  for (const f of [...docFiles(), ...walk("src", ".ts"), ...walk("scripts", ".ts")]) {
    read(f)
      .split("\n")
      .forEach((l, i) => pattern.test(l) && hits.push(`${f}:${i + 1}: ${l.trim()}`));
  }
  assert.deepEqual(hits, [], "refer to what the text means, not to an internal issue");
});
