import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const SRC = fileURLToPath(new URL("../../src/", import.meta.url));

/**
 * The npm packages a fresh Node loads for these imports of src/ (ESM and CommonJS), by their registry names, and
 * masq's own files (as "src/…").
 */
function packagesLoadedBy(modules: string[], opts: { threadEntry?: boolean } = {}): string[] {
  const script = `
    import { registerHooks } from "node:module";
    const seen = new Set();
    registerHooks({ resolve(spec, ctx, next) {
      const r = next(spec, ctx);
      const m = /node_modules\\/((?:@[^/]+\\/)?[^/]+)/.exec(r.url) ?? /\\/(src\\/.+\\.ts)$/.exec(r.url);
      if (m) seen.add(m[1]);
      return r;
    } });
    for (const m of ${JSON.stringify(modules)}) {
      // A thread's entry module throws here, on the main thread (it has no parentPort), but only once everything
      // it imports is loaded: the whole module graph is loaded before any of it runs.
      try { await import(${JSON.stringify(SRC)} + m); } catch (err) { if (!${opts.threadEntry === true}) throw err; }
    }
    process.stdout.write(JSON.stringify([...seen].sort()));`;
  return JSON.parse(execFileSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" })) as string[];
}

test("masq run loads only what a run needs: no kysely, no pino-pretty, no KMS or STS client, no prom-client (about 0.3 s of every start)", () => {
  const loaded = packagesLoadedBy(["cli.ts", "commands/run.ts", "log.ts"]);
  assert.ok(loaded.includes("pg"), loaded.join(" "));
  // KMS and STS load at the first KMS call (kms-provider.ts); prom-client only when /metrics is served (run.ts); the
  // SQS client only in the SQS thread (ingest/sqs-thread-worker.ts), while the main thread starts; yaml only when a
  // config file is named (settings/config-file.ts).
  for (const heavy of ["kysely", "pino-pretty", "@aws-sdk/client-kms", "@aws-sdk/client-sts", "prom-client", "@aws-sdk/client-sqs", "yaml"]) {
    assert.ok(!loaded.includes(heavy), `${heavy} is loaded: ${loaded.join(" ")}`);
  }
});

test("masq run loads neither the HTTP listener nor retention's pruning before it knows they are configured", () => {
  const loaded = packagesLoadedBy(["cli.ts", "commands/run.ts", "log.ts"]);
  assert.ok(loaded.includes("src/db/prepare-database.ts"), loaded.join(" "));
  for (const file of ["src/ops/http.ts", "src/ops/http.ts", "src/lifecycle/retention.ts", "src/lifecycle/retention.ts"]) {
    assert.ok(!loaded.includes(file), `${file} is loaded: ${loaded.join(" ")}`);
  }
});

test("the command line loads no command's module before the command runs", () => {
  const loaded = packagesLoadedBy(["cli.ts"]);
  for (const heavy of ["@aws-sdk/client-sqs", "pg", "@noble/hashes"]) assert.ok(!loaded.includes(heavy), `${heavy} is loaded: ${loaded.join(" ")}`);
});

test("a prepare thread loads no database driver, query builder or logger: it only masks and seals", () => {
  const loaded = packagesLoadedBy(["ingest/prepare-worker.ts"], { threadEntry: true });
  assert.ok(loaded.includes("src/ingest/prepare.ts"), loaded.join(" "));
  for (const heavy of ["pg", "kysely", "pino", "@aws-sdk/client-sqs", "@aws-sdk/client-kms"]) assert.ok(!loaded.includes(heavy), `${heavy} is loaded: ${loaded.join(" ")}`);
});

test("the SQS thread loads the SQS client and neither Postgres's driver nor the logger", () => {
  const loaded = packagesLoadedBy(["ingest/sqs-thread-worker.ts"], { threadEntry: true });
  assert.ok(loaded.includes("@aws-sdk/client-sqs"), loaded.join(" "));
  for (const heavy of ["pg", "kysely", "pino", "@aws-sdk/client-kms"]) assert.ok(!loaded.includes(heavy), `${heavy} is loaded: ${loaded.join(" ")}`);
});

test("masq top reads /metrics without loading the metrics library, and the synthetic events load no package at all", () => {
  const top = packagesLoadedBy(["commands/top.ts"]);
  assert.ok(!top.includes("prom-client"), top.join(" "));
  // The benchmark's measured process imports the synthetic events: nothing else may come with them.
  assert.deepEqual(packagesLoadedBy(["ops/synthetic-events.ts"]), ["src/ops/synthetic-events.ts"]);
});
