import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import type { Command, Option } from "commander";
import { buildProgram } from "../../src/cli.ts";
import {
  readConnectTimeoutMs,
  readKeyConfig,
  readLogFormat,
  readLogLevel,
  readPipelineConfig,
  readContractFile,
  readPseudonymKey,
  readQueueSettings,
  readRetentionDays,
  readRunConfig,
  readRunSettings,
  readTable,
  type Sources,
} from "../../src/settings/config.ts";
import { SETTINGS, type Setting } from "../../src/settings/spec.ts";

const MASQ = fileURLToPath(new URL("../../bin/masq", import.meta.url));
const QUEUE_URL = "http://localhost:4566/000000000000/login-queue";
const MASTER = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI with only the given environment: nothing leaks in from the test's own. */
function masq(args: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync(process.execPath, [MASQ, ...args], { env, encoding: "utf8", timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function lines(text: string): string[] {
  return text.split("\n").filter((l) => l.trim() !== "");
}

function assertNoStackTrace(r: Run): void {
  assert.ok(!r.stderr.includes("    at "), `stack trace in stderr:\n${r.stderr}`);
  assert.ok(!r.stdout.includes("    at "), `stack trace in stdout:\n${r.stdout}`);
}

describe("masq run with a configuration mistake exits 2 before touching anything", () => {
  test("no QUEUE_URL: one stderr line naming QUEUE_URL", () => {
    const r = masq(["run"]);
    assert.equal(r.status, 2);
    assert.equal(r.stdout, "");
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /QUEUE_URL/);
    assertNoStackTrace(r);
  });

  const shortKeys = [
    ["hex of 23 bytes", "0123456789abcdef0123456789abcdef0123456789abcd"],
    ["base64 of 16 bytes", "c2VjcmV0LWtleS12YWx1ZQ=="],
    ["garbage", "my-very-secret-password!"],
  ];
  for (const [name, key] of shortKeys) {
    test(`MASQ_PSEUDONYM_KEY ${name}: named, and its value never printed`, () => {
      const r = masq(["run"], { QUEUE_URL, MASQ_MASTER_KEY: MASTER, MASQ_PSEUDONYM_KEY: key! });
      assert.equal(r.status, 2);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
      assert.match(r.stderr, /MASQ_PSEUDONYM_KEY/);
      assert.ok(!r.stderr.includes(key!) && !r.stdout.includes(key!));
      assert.ok(!r.stderr.includes(key!.slice(0, 12)) && !r.stdout.includes(key!.slice(0, 12)));
      assertNoStackTrace(r);
    });
  }

  for (const [name, key] of shortKeys) {
    test(`MASQ_MASTER_KEY ${name}: named, and its value never printed`, () => {
      const r = masq(["run"], { QUEUE_URL, MASQ_MASTER_KEY: key! });
      assert.equal(r.status, 2);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
      assert.match(r.stderr, /MASQ_MASTER_KEY/);
      assert.ok(!r.stderr.includes(key!.slice(0, 12)) && !r.stdout.includes(key!.slice(0, 12)));
      assertNoStackTrace(r);
    });
  }

  test("no master key: one line naming the settings that give one, not MASQ_KEY_PROVIDER (nobody has to set it)", () => {
    const r = masq(["run"], { QUEUE_URL });
    assert.equal(r.status, 2);
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /^masq: no master key \(MASQ_KMS_KEY_ID or MASQ_MASTER_KEY\): .*MASQ_MASTER_KEY_FILE/);
    assert.ok(!r.stderr.includes("MASQ_KEY_PROVIDER"), r.stderr);
    assertNoStackTrace(r);
  });

  test("an invalid flag value: named as the flag", () => {
    const r = masq(["run", "--batch-size", "abc"], { QUEUE_URL, MASQ_MASTER_KEY: MASTER });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--batch-size/);
    assertNoStackTrace(r);
  });

  test("an invalid MASQ_LOG_FORMAT: named, with the values it takes", () => {
    const r = masq(["run"], { QUEUE_URL, MASQ_MASTER_KEY: MASTER, MASQ_LOG_FORMAT: "fancy" });
    assert.equal(r.status, 2);
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /MASQ_LOG_FORMAT.*json, pretty/);
    assertNoStackTrace(r);
  });

  test("an invalid DATABASE_URL: named, and its password never printed", () => {
    const r = masq(["run"], { QUEUE_URL, MASQ_MASTER_KEY: MASTER, DATABASE_URL: "postgres://u:s3cret@h:99999/db" });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /DATABASE_URL/);
    assert.ok(!r.stderr.includes("s3cret") && !r.stdout.includes("s3cret"));
    assertNoStackTrace(r);
  });
});

describe("usage mistakes exit 2 without a stack trace", () => {
  const cases: [args: string[], mentions: RegExp][] = [
    [["run", "--bogus"], /--bogus/],
    [["--bogus"], /--bogus/],
    [["migrate", "--bogus"], /--bogus/],
    [["bogus"], /bogus/],
    [["demo", "--messages", "0"], /--messages/],
    [["demo", "--seed", "x"], /--seed/],
  ];
  for (const [args, mentions] of cases) {
    test(`masq ${args.join(" ")}`, () => {
      const r = masq(args);
      assert.equal(r.status, 2);
      assert.match(r.stderr, mentions);
      assertNoStackTrace(r);
    });
  }
});

describe("--help exits 0 and lists the options", () => {
  const cases: [args: string[], mentions: string[]][] = [
    [["--help"], ["run", "migrate", "demo", "--version", "--help"]],
    [
      ["run", "--help"],
      ["--queue-url", "--drain", "--batch-size", "--sqs-protocol", "--max-in-flight", "--no-migrate", "--database-url", "--table", "QUEUE_URL"],
    ],
    [["migrate", "--help"], ["--database-url", "--table", "--log-level", "DATABASE_URL"]],
    [["demo", "--help"], ["--messages", "--seed", "--keep"]],
  ];
  for (const [args, mentions] of cases) {
    test(`masq ${args.join(" ")}`, () => {
      const r = masq(args);
      assert.equal(r.status, 0, r.stderr);
      for (const m of mentions) assert.ok(r.stdout.includes(m), `help does not mention ${m}:\n${r.stdout}`);
      assertNoStackTrace(r);
    });
  }

  test("masq --version prints the version", () => {
    const r = masq(["--version"]);
    assert.equal(r.status, 0);
    assert.match(r.stdout.trim(), /^\d+\.\d+\.\d+$/);
  });
});

describe("arguments that may be PII are never echoed back", () => {
  const values = ["DEVX-111-22-3333", "203.0.113.10", "2001:db8::77"];
  for (const value of values) {
    test(`unmask --pseudonym ${value}`, () => {
      const r = masq(["unmask", "--reason", "case 4711", "--pseudonym", value]);
      assert.equal(r.status, 2);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
      assert.match(r.stderr, /^masq: not a pseudonym \(--pseudonym\): must be 64 hex digits, as in the pseudonym columns \(masked_ip, masked_device_id, a contract's pseudonymize columns\)/);
      assert.ok(!r.stderr.toLowerCase().includes(value.toLowerCase()), r.stderr);
      assertNoStackTrace(r);
    });
    test(`pseudonym with a contract: ${value} as the kind, or a value no field of the kind holds`, () => {
      const contract = ["--contract", "contracts/examples/purchase.yaml", "--reason", "case 4711"];
      const swapped = masq(["pseudonym", value, "email", ...contract]);
      assert.equal(swapped.status, 2);
      assert.match(swapped.stderr, /^masq: unknown kind \(<kind>\): must be one of the kinds of contracts\/examples\/purchase\.yaml: email, card_last4 /);
      const tooLong = masq(["pseudonym", "card_last4", value, ...contract]);
      assert.equal(tooLong.status, 2);
      assert.match(tooLong.stderr, /^masq: invalid setting \(<value>\): is longer than the 4 characters a string field of this kind accepts\n$/);
      for (const r of [swapped, tooLong]) {
        assert.equal(lines(r.stderr).length, 1, r.stderr);
        assert.ok(!r.stderr.toLowerCase().includes(value.toLowerCase()), r.stderr);
        assertNoStackTrace(r);
      }
    });
    test(`unmask --kind ${value}`, () => {
      const r = masq(["unmask", "--reason", "case 4711", "--user-id", "u1", "--kind", value]);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /\(--kind\): must be ip or device_id/);
      assert.ok(!r.stderr.toLowerCase().includes(value.toLowerCase()), r.stderr);
    });
  }
});

describe("--reason is the audit justification, and says what is wrong with it", () => {
  test("three zero-width spaces are not a reason", () => {
    const r = masq(["unmask", "--reason", "\u200b\u200b\u200b", "--pseudonym", "a".repeat(64)]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^masq: justification too short \(--reason\): is too short: it has 0 visible character/);
  });
  test("a short justification is called too short, not missing", () => {
    const r = masq(["pseudonym", "ip", "203.0.113.9", "--reason", "ab"]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /too short: it has 2 visible character/);
    assert.ok(!r.stderr.includes("is required"), r.stderr);
    assert.ok(!r.stderr.includes("203.0.113.9"), r.stderr);
  });
  test("quarantine filters by --reason-code, checked against the known codes", () => {
    const r = masq(["quarantine", "list", "--reason-code", "fixing ticket 12"]);
    assert.equal(r.status, 2);
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /^masq: unknown reason code \(--reason-code\): .*invalid_json, .*db_rejected/);
  });
  test("quarantine replay --reason (a justification where a filter was meant) is refused, pointing at --reason-code", () => {
    const r = masq(["quarantine", "replay", "--reason", "fixing ticket 12"]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--reason-code/);
    assertNoStackTrace(r);
  });
});

describe("the HTTP listener's settings, when wrong, are named", () => {
  test("a port in use: one line naming MASQ_HTTP_PORT, exit 2", async () => {
    const { createServer } = await import("node:net");
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const r = masq(["run"], { QUEUE_URL, MASQ_MASTER_KEY: MASTER, MASQ_HTTP_PORT: String(port), MASQ_HTTP_HOST: "127.0.0.1", MASQ_LOG_LEVEL: "silent" });
      assert.equal(r.status, 2);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^masq: cannot start the HTTP listener .*\\(MASQ_HTTP_PORT\\): port ${port} on 127.0.0.1 is in use`));
      assert.ok(!r.stderr.includes("EADDRINUSE"), r.stderr);
      assertNoStackTrace(r);
    } finally {
      blocker.close();
    }
  });
  for (const host of ["not a host", "999.1.1.1", "192.0.2.1"]) {
    test(`MASQ_HTTP_HOST=${host}: named, exit 2`, () => {
      const r = masq(["run"], { QUEUE_URL, MASQ_MASTER_KEY: MASTER, MASQ_HTTP_HOST: host, MASQ_HTTP_PORT: "0", MASQ_LOG_LEVEL: "silent" });
      assert.equal(r.status, 2, r.stderr);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
      assert.match(r.stderr, /\(MASQ_HTTP_HOST\)/);
      assertNoStackTrace(r);
    });
  }
});

describe("every command's help: one format, only the flags it reads, an example", () => {
  /** Each command's long flags, as its code reads them (src/commands/*): a flag listed but ignored is a lie. */
  const expected: Record<string, string[]> = {
    run: [
      "--drain", "--queue-url", "--sqs-protocol", "--sqs-endpoint", "--table", "--database-url", "--batch-size", "--batch-wait-ms", "--receivers",
      "--writers", "--max-in-flight", "--wait-time-seconds", "--visibility-timeout", "--shutdown-timeout-ms", "--http-port", "--http-host",
      "--no-migrate", "--log-level", "--config", "--contract",
    ],
    migrate: ["--table", "--database-url", "--log-level", "--config", "--contract"],
    status: ["--queue-url", "--sqs-protocol", "--sqs-endpoint", "--table", "--database-url", "--json", "--config"],
    quarantine: [],
    "quarantine list": ["--reason-code", "--reason", "--limit", "--all", "--json", "--database-url", "--config"],
    "quarantine show": ["--original", "--reason", "--json", "--database-url", "--config"],
    "quarantine replay": ["--id", "--reason-code", "--reason", "--all", "--body-file", "--dry-run", "--contract", "--table", "--database-url", "--config"],
    unmask: ["--reason", "--pseudonym", "--user-id", "--from", "--to", "--kind", "--format", "--limit", "--table", "--database-url", "--config"],
    pseudonym: ["--reason", "--contract", "--database-url", "--config"],
    subject: [],
    "subject export": ["--user-id", "--reason", "--from", "--to", "--format", "--page-size", "--table", "--database-url", "--config"],
    rotate: [],
    "rotate master-key": ["--batch-size", "--dry-run", "--database-url", "--config"],
    "rotate pseudonym-key": ["--batch-size", "--resume", "--dry-run", "--table", "--database-url", "--config"],
    vault: [],
    "vault prune": ["--batch-size", "--dry-run", "--table", "--database-url", "--config"],
    demo: ["--messages", "--keep", "--seed", "--config"],
    "subject erase": ["--user-id", "--reason", "--vault-only", "--dry-run", "--table", "--database-url", "--config"],
    audit: [],
    "audit list": ["--limit", "--user-id", "--json", "--database-url", "--config"],
    "audit verify": ["--against", "--database-url", "--config"],
    "audit checkpoint": ["--database-url", "--config"],
    check: ["--queue-url", "--sqs-protocol", "--sqs-endpoint", "--offline", "--contract", "--table", "--database-url", "--config"],
    preview: ["--contract", "--sent-at", "--config"],
    "local-queue": ["--events", "--synthetic", "--seed", "--queue-name", "--port"],
    top: ["--url", "--json", "--config"],
  };

  function commands(cmd: Command, prefix = ""): [string, Command][] {
    return cmd.commands.flatMap((c) => {
      const name = `${prefix}${c.name()}`;
      return [[name, c] as [string, Command], ...commands(c, `${name} `)];
    });
  }

  function help(cmd: Command): string {
    let text = "";
    cmd.configureOutput({ writeOut: (s) => (text += s) });
    cmd.outputHelp();
    return text;
  }

  const all = commands(buildProgram());
  test("the table above covers every command", () => {
    assert.deepEqual(all.map(([name]) => name).sort(), Object.keys(expected).sort());
  });

  for (const [name, cmd] of all) {
    test(`masq ${name} --help`, () => {
      const flags = cmd.options.map((o) => o.long).filter((f) => f !== "--help");
      assert.deepEqual(flags.sort(), [...expected[name]!].sort());
      const text = help(cmd);
      assert.match(text, /\nExamples:\n {2}\$ /, "an example");
      for (const example of text.split("\nExamples:\n")[1]!.split("\n").filter(Boolean)) {
        assert.match(example, new RegExp(`^ {2}\\$ (\\S+=\\S+ )*masq ${name.replace(/ /g, " ")}\\b`), `the example runs this command: ${example}`);
      }
      // One format for defaults and environment variables: "(default: 1000; env: MASQ_BATCH_SIZE)", never quoted.
      assert.ok(!/default: "/.test(text), `a quoted default:\n${text}`);
      assert.ok(!/\(default [^:]/.test(text) && !/, env:/.test(text), `another default format:\n${text}`);
    });
  }
});

describe("each command's --help names every setting it reads", () => {
  // What each command reads, as the reader functions its code calls (src/commands/*.ts, through withVault, withKeys,
  // withDb). Which variables each function reads is observed by running it on an environment that records every
  // name looked up: neither list is the one --help is made from (the parts in src/settings/spec.ts).
  const VAULT = [readKeyConfig, readConnectTimeoutMs, readPseudonymKey];
  const READERS: Record<string, ((src: Sources) => unknown)[]> = {
    run: [(src) => readRunConfig(src, false), readConnectTimeoutMs, readLogFormat, readRetentionDays],
    migrate: [readTable, readLogLevel, readLogFormat, readConnectTimeoutMs, readKeyConfig, readContractFile],
    status: [readQueueSettings, readTable, readConnectTimeoutMs, readRetentionDays],
    "quarantine list": [readConnectTimeoutMs],
    "quarantine show": [readKeyConfig, readConnectTimeoutMs],
    "quarantine replay": [readTable, readContractFile, ...VAULT],
    unmask: [readTable, ...VAULT],
    pseudonym: [...VAULT, readContractFile],
    "subject export": [readTable, ...VAULT],
    "subject erase": [readTable, readKeyConfig, readConnectTimeoutMs],
    "audit list": [readKeyConfig],
    "audit verify": [readKeyConfig],
    "audit checkpoint": [readKeyConfig],
    "rotate master-key": [readKeyConfig, readConnectTimeoutMs],
    "rotate pseudonym-key": [readTable, ...VAULT],
    "vault prune": [readTable, readKeyConfig, readConnectTimeoutMs, readRetentionDays],
    demo: [readPipelineConfig, readLogFormat],
    check: [(src) => readRunSettings(src, false), readConnectTimeoutMs, readContractFile],
    preview: [readContractFile, readPseudonymKey],
  };

  /** The variables `read` looks up, with either kind of master key (each reads settings the other does not). */
  function variablesReadBy(read: (src: Sources) => unknown): Set<string> {
    const names = new Set<string>();
    for (const given of [{ QUEUE_URL: QUEUE_URL, MASQ_MASTER_KEY: MASTER }, { QUEUE_URL: QUEUE_URL, MASQ_KMS_KEY_ID: "alias/masq" }]) {
      const env = new Proxy<NodeJS.ProcessEnv>(given, {
        get: (target, name) => {
          if (typeof name !== "string") return undefined;
          names.add(name);
          return target[name];
        },
      });
      read({ flags: {}, env });
    }
    return names;
  }

  function helpOf(name: string): string {
    let cmd: Command = buildProgram();
    for (const part of name.split(" ")) cmd = cmd.commands.find((c) => c.name() === part)!;
    let text = "";
    cmd.configureOutput({ writeOut: (s) => (text += s) });
    cmd.outputHelp();
    return text;
  }

  test("the readers are seen reading settings", () => {
    assert.deepEqual([...variablesReadBy(readKeyConfig)].filter((n) => n.startsWith("MASQ_MASTER")).sort(), ["MASQ_MASTER_KEY", "MASQ_MASTER_KEY_FILE", "MASQ_MASTER_KEY_PREVIOUS"]);
  });

  for (const [name, readers] of Object.entries(READERS)) {
    test(`masq ${name} --help`, () => {
      const reads = new Set(readers.flatMap((r) => [...variablesReadBy(r)]));
      const missing = [...reads].filter((s) => !new RegExp(`\\b${s}\\b`).test(helpOf(name)));
      assert.deepEqual(missing, [], `masq ${name} --help does not name settings the command reads`);
    });
  }

  test("a command that needs a key names the settings that give one", () => {
    for (const name of ["run", "unmask", "subject export", "check"]) {
      for (const s of ["MASQ_MASTER_KEY", "MASQ_MASTER_KEY_FILE", "MASQ_KMS_KEY_ID"]) assert.match(helpOf(name), new RegExp(`\\b${s}\\b`), `masq ${name}`);
    }
  });
});

describe("the flags of settings are made from their declarations", () => {
  function options(cmd: Command, path = ""): { path: string; opt: Option }[] {
    return cmd.commands.flatMap((c) => [...c.options.map((opt) => ({ path: `${path}${c.name()}`, opt })), ...options(c, `${path}${c.name()} `)]);
  }
  const all = options(buildProgram());
  const declared = Object.values(SETTINGS) as Setting<unknown>[];

  test("every option that names a variable is that setting's flag, with the default the declaration shows", () => {
    const problems: string[] = [];
    for (const { path, opt } of all.filter(({ opt }) => opt.envVar !== undefined)) {
      const s = declared.find((d) => d.env === opt.envVar);
      if (s?.flag?.split(" ")[0] !== opt.long) problems.push(`masq ${path} ${opt.long}: ${opt.envVar} is not declared with this flag in src/settings/spec.ts`);
      // A command may say what its own default is (subject export: every table); otherwise the declaration's.
      else if (opt.defaultValue !== undefined) problems.push(`masq ${path} ${opt.long}: a default for commander (${String(opt.defaultValue)}); the reader applies defaults`);
    }
    assert.deepEqual(problems, []);
    const batchSize = all.find(({ path, opt }) => path === "run" && opt.long === "--batch-size")!.opt;
    assert.equal(batchSize.defaultValueDescription, "1000");
  });

  test("every declared flag is taken by some command", () => {
    const longs = new Set(all.map(({ opt }) => opt.long));
    assert.deepEqual(declared.filter((s) => s.flag !== undefined && !longs.has(s.flag.split(" ")[0])).map((s) => s.flag), []);
  });
});
