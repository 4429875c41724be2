import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { isDeepStrictEqual } from "node:util";
import { ConfigError } from "../../src/errors.ts";
import {
  hasMasterKey,
  readConnectTimeoutMs,
  readContractFile,
  readHttp,
  readLambdaConfig,
  readLogFormat,
  readNamedTable,
  readPipelineConfig,
  readRegion,
  readRetentionDays,
  readRunConfig,
  readWatchedPort,
  settingSources,
  type PipelineConfig,
} from "../../src/settings/config.ts";
import { envNames, SETTINGS, shownDefault, type Setting } from "../../src/settings/spec.ts";
import { TEST_KEY, TEST_KEY_HEX } from "./fixtures.ts";

const AWS_QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/q";
const LOCALSTACK_QUEUE = "http://localhost:4566/000000000000/login-queue";

/** The least environment `masq run` starts with. */
const MASTER_HEX = "20".repeat(32);
const BASE_ENV = { QUEUE_URL: AWS_QUEUE, MASQ_MASTER_KEY: MASTER_HEX };
const LOCAL_KEYS = { provider: "local", masterKey: new Uint8Array(32).fill(0x20), previousMasterKeys: [], limits: { maxAgeMs: 3_600_000, maxUses: 1_000_000 } };

const DEFAULT_PIPELINE: PipelineConfig = {
  batchSize: 1000,
  batchWaitMs: 50,
  receivers: 8,
  maxInFlight: 5000,
  maxInFlightBytes: 32 * 1024 * 1024,
  writers: 2,
  waitTimeSeconds: 20,
  visibilityTimeoutSeconds: 60,
  shutdownTimeoutMs: 30_000,
  // One prepare thread per core the main thread leaves, at least one, at most one per writer.
  prepareThreads: Math.max(0, Math.min(availableParallelism() - 2, 2)),
};

describe("defaults", () => {
  test("of the pipeline, for a service", () => {
    assert.deepEqual(readPipelineConfig({ flags: {}, env: {} }), DEFAULT_PIPELINE);
  });

  test("of the pipeline, for a drain: short polls", () => {
    assert.deepEqual(readPipelineConfig({ flags: {}, env: {} }, true), { ...DEFAULT_PIPELINE, waitTimeSeconds: 1 });
  });

  test("of max in flight: three batches when that is more than 5000", () => {
    assert.equal(readPipelineConfig({ flags: {}, env: { MASQ_BATCH_SIZE: "4000" } }).maxInFlight, 12_000);
    assert.equal(readPipelineConfig({ flags: {}, env: { MASQ_BATCH_SIZE: "1000" } }).maxInFlight, 5000);
  });

  test("of a run", () => {
    const config = readRunConfig({ flags: {}, env: BASE_ENV }, false);
    assert.deepEqual(config, {
      queueUrl: AWS_QUEUE,
      databaseUrl: undefined,
      table: { schema: "public", name: "user_logins" },
      keys: LOCAL_KEYS,
      pseudonymKeyOverride: undefined,
      sqsProtocol: "auto",
      sqsEndpoint: undefined,
      region: "us-east-1",
      migrate: true,
      logLevel: "info",
      pipeline: DEFAULT_PIPELINE,
      http: { port: 8717, host: "0.0.0.0" },
    });
  });

  test("the metrics listener: 8717 for the service, not Prometheus's 9090; off for a drain unless asked for", () => {
    assert.deepEqual(readRunConfig({ flags: {}, env: BASE_ENV }, false).http, { port: 8717, host: "0.0.0.0" });
    assert.equal(readRunConfig({ flags: {}, env: BASE_ENV }, true).http, undefined);
    assert.deepEqual(readRunConfig({ flags: {}, env: { ...BASE_ENV, MASQ_HTTP_PORT: "9999" } }, true).http, { port: 9999, host: "0.0.0.0" });
    assert.deepEqual(readRunConfig({ flags: { httpPort: "0" }, env: BASE_ENV }, true).http, { port: 0, host: "0.0.0.0" });
  });

  test("one-shot commands wait 30 s for a server by default; MASQ_CONNECT_TIMEOUT_SECONDS changes it", () => {
    assert.equal(readConnectTimeoutMs({ flags: {}, env: {} }), 30_000);
    assert.equal(readConnectTimeoutMs({ flags: {}, env: { MASQ_CONNECT_TIMEOUT_SECONDS: "5" } }), 5_000);
    assert.throws(() => readConnectTimeoutMs({ flags: {}, env: { MASQ_CONNECT_TIMEOUT_SECONDS: "0" } }), (e: Error) => e instanceof ConfigError && e.setting === "MASQ_CONNECT_TIMEOUT_SECONDS");
  });

  test("the HTTP listener: on by default for run, a port, 0 for any free port, or off", () => {
    assert.deepEqual(readHttp({ flags: {}, env: { MASQ_HTTP_PORT: "0" } }, 9090), { port: 0, host: "0.0.0.0" });
    assert.deepEqual(readHttp({ flags: { httpPort: "8080" }, env: { MASQ_HTTP_PORT: "9100", MASQ_HTTP_HOST: "127.0.0.1" } }, 9090), { port: 8080, host: "127.0.0.1" });
    assert.equal(readHttp({ flags: {}, env: { MASQ_HTTP_PORT: "off" } }, 9090), undefined);
    assert.equal(readHttp({ flags: {}, env: {} }, undefined), undefined, "off by default where the caller says so (the demo)");
    assert.throws(() => readHttp({ flags: {}, env: { MASQ_HTTP_PORT: "70000" } }, 9090), (e: Error) => e instanceof ConfigError && e.message.startsWith("MASQ_HTTP_PORT"));
    for (const host of ["::", "127.0.0.1", "localhost", "metrics.internal", "::1"]) assert.equal(readHttp({ flags: {}, env: { MASQ_HTTP_HOST: host } }, 1)?.host, host);
  });

  test("of a drain run: wait time 1", () => {
    assert.equal(readRunConfig({ flags: {}, env: BASE_ENV }, true).pipeline.waitTimeSeconds, 1);
  });
});

describe("environment", () => {
  test("sets every pipeline setting", () => {
    const env = {
      MASQ_BATCH_SIZE: "200",
      MASQ_BATCH_WAIT_MS: "0",
      MASQ_RECEIVERS: "3",
      MASQ_MAX_IN_FLIGHT: "600",
      MASQ_WRITERS: "4",
      MASQ_WAIT_TIME_SECONDS: "5",
      MASQ_VISIBILITY_TIMEOUT: "120",
      MASQ_SHUTDOWN_TIMEOUT_MS: "2000",
      MASQ_PREPARE_THREADS: "0",
    };
    assert.deepEqual(readPipelineConfig({ flags: {}, env }), {
      batchSize: 200,
      batchWaitMs: 0,
      receivers: 3,
      maxInFlight: 600,
      maxInFlightBytes: 32 * 1024 * 1024,
      writers: 4,
      prepareThreads: 0,
      waitTimeSeconds: 5,
      visibilityTimeoutSeconds: 120,
      shutdownTimeoutMs: 2000,
    });
  });

  test("MASQ_MAX_IN_FLIGHT_BYTES unset leaves every receiver room for its receive (10 × 256 KiB) and 8 MiB more, at least 32 MiB; set, it is what was set", () => {
    const MiB = 1024 * 1024;
    const bytes = (env: Record<string, string>) => readPipelineConfig({ flags: {}, env }).maxInFlightBytes;
    assert.deepEqual(
      ["1", "8", "9", "10", "16", "32"].map((r) => bytes({ MASQ_RECEIVERS: r }) / MiB),
      [32, 32, 32, 33, 48, 88],
    );
    assert.equal(bytes({}), 32 * MiB, "the default 8 receivers");
    assert.equal(bytes({ MASQ_RECEIVERS: "32", MASQ_MAX_IN_FLIGHT_BYTES: String(32 * MiB) }), 32 * MiB);
  });

  const region: [env: Record<string, string>, expected: string][] = [
    [{ AWS_REGION: "eu-west-1" }, "eu-west-1"],
    [{ AWS_DEFAULT_REGION: "eu-central-1" }, "eu-central-1"],
    [{ AWS_REGION: "eu-west-1", AWS_DEFAULT_REGION: "eu-central-1" }, "eu-west-1"],
  ];
  for (const [env, expected] of region) {
    test(`region from ${Object.keys(env).join(" and ")}`, () => {
      assert.equal(readRunConfig({ flags: {}, env: { ...BASE_ENV, ...env } }, false).region, expected);
    });
  }

  for (const value of ["false", "0", "FALSE", "False", "no", "off", " false "]) {
    test(`MASQ_MIGRATE=${JSON.stringify(value)} turns migration off`, () => {
      assert.equal(readRunConfig({ flags: {}, env: { ...BASE_ENV, MASQ_MIGRATE: value } }, false).migrate, false);
    });
  }
  for (const value of ["true", "TRUE", "1", "yes", "on"]) {
    test(`MASQ_MIGRATE=${value} keeps migration on`, () => {
      assert.equal(readRunConfig({ flags: {}, env: { ...BASE_ENV, MASQ_MIGRATE: value } }, false).migrate, true);
    });
  }

  test("the key can come from a file", () => {
    const dir = mkdtempSync(join(tmpdir(), "masq-config-"));
    try {
      writeFileSync(join(dir, "key"), `${TEST_KEY_HEX}\n`);
      const env = { ...BASE_ENV, MASQ_PSEUDONYM_KEY_FILE: join(dir, "key") };
      assert.deepEqual(readRunConfig({ flags: {}, env }, false).pseudonymKeyOverride, TEST_KEY);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});

describe("flags win over the environment", () => {
  const cases: [name: string, flags: Record<string, unknown>, env: Record<string, string>, pick: (c: ReturnType<typeof readRunConfig>) => unknown, expected: unknown][] = [
    ["queue URL", { queueUrl: LOCALSTACK_QUEUE }, {}, (c) => c.queueUrl, LOCALSTACK_QUEUE],
    ["batch size", { batchSize: "50" }, { MASQ_BATCH_SIZE: "70" }, (c) => c.pipeline.batchSize, 50],
    ["batch size given as a number", { batchSize: 60 }, { MASQ_BATCH_SIZE: "70" }, (c) => c.pipeline.batchSize, 60],
    ["batch wait", { batchWaitMs: "10" }, { MASQ_BATCH_WAIT_MS: "20" }, (c) => c.pipeline.batchWaitMs, 10],
    ["wait time", { waitTimeSeconds: "3" }, { MASQ_WAIT_TIME_SECONDS: "7" }, (c) => c.pipeline.waitTimeSeconds, 3],
    ["max in flight", { maxInFlight: "7000" }, { MASQ_MAX_IN_FLIGHT: "9000" }, (c) => c.pipeline.maxInFlight, 7000],
    ["visibility timeout", { visibilityTimeout: "30" }, { MASQ_VISIBILITY_TIMEOUT: "90" }, (c) => c.pipeline.visibilityTimeoutSeconds, 30],
    ["SQS protocol", { sqsProtocol: "query" }, { MASQ_SQS_PROTOCOL: "json" }, (c) => c.sqsProtocol, "query"],
    ["SQS endpoint", { sqsEndpoint: "http://flag:1" }, { AWS_ENDPOINT_URL_SQS: "http://env:2" }, (c) => c.sqsEndpoint, "http://flag:1"],
    ["database URL", { databaseUrl: "postgres://flag/db" }, { DATABASE_URL: "postgres://env/db" }, (c) => c.databaseUrl, "postgres://flag/db"],
    ["table", { table: "analytics.logins" }, { MASQ_TABLE: "other" }, (c) => c.table, { schema: "analytics", name: "logins" }],
    ["log level", { logLevel: "debug" }, { MASQ_LOG_LEVEL: "warn" }, (c) => c.logLevel, "debug"],
    ["--no-migrate", { migrate: false }, {}, (c) => c.migrate, false],
    ["an empty flag falls back to the environment", { batchSize: "" }, { MASQ_BATCH_SIZE: "70" }, (c) => c.pipeline.batchSize, 70],
  ];
  for (const [name, flags, env, pick, expected] of cases) {
    test(name, () => {
      assert.deepEqual(pick(readRunConfig({ flags: flags, env: { ...BASE_ENV, ...env } }, false)), expected);
    });
  }
});

describe("the SQS endpoint", () => {
  const cases: [queueUrl: string, env: Record<string, string>, expected: string | undefined][] = [
    [LOCALSTACK_QUEUE, {}, "http://localhost:4566"],
    ["http://127.0.0.1:9324/queue/login-queue", {}, "http://127.0.0.1:9324"],
    [AWS_QUEUE, {}, undefined],
    ["https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", {}, undefined],
    ["https://sqs.evil-amazonaws.com/123456789012/q", {}, "https://sqs.evil-amazonaws.com"],
    [AWS_QUEUE, { AWS_ENDPOINT_URL_SQS: "http://sqs.local:4566" }, "http://sqs.local:4566"],
    [AWS_QUEUE, { AWS_ENDPOINT_URL: "http://aws.local:4566" }, "http://aws.local:4566"],
    [LOCALSTACK_QUEUE, { AWS_ENDPOINT_URL_SQS: "http://sqs.local:1", AWS_ENDPOINT_URL: "http://aws.local:2" }, "http://sqs.local:1"],
  ];
  for (const [queueUrl, env, expected] of cases) {
    test(`of ${queueUrl}${Object.keys(env).length > 0 ? ` with ${Object.keys(env).join(", ")}` : ""} is ${expected}`, () => {
      assert.equal(readRunConfig({ flags: {}, env: { ...BASE_ENV, QUEUE_URL: queueUrl, ...env } }, false).sqsEndpoint, expected);
    });
  }
});

describe("an invalid setting throws a ConfigError naming it", () => {
  const PASSWORD = "s3cret";
  const cases: [name: string, flags: Record<string, unknown>, env: Record<string, string | undefined>, setting: string][] = [
    ["QUEUE_URL missing", {}, { QUEUE_URL: undefined }, "QUEUE_URL"],
    ["QUEUE_URL empty", {}, { QUEUE_URL: "" }, "QUEUE_URL"],
    ["QUEUE_URL not a URL", {}, { QUEUE_URL: "login-queue" }, "QUEUE_URL"],
    ["--queue-url not a URL", { queueUrl: "login-queue" }, {}, "--queue-url"],
    ["MASQ_BATCH_SIZE abc", {}, { MASQ_BATCH_SIZE: "abc" }, "MASQ_BATCH_SIZE"],
    ["MASQ_BATCH_SIZE 0", {}, { MASQ_BATCH_SIZE: "0" }, "MASQ_BATCH_SIZE"],
    ["MASQ_BATCH_SIZE -5", {}, { MASQ_BATCH_SIZE: "-5" }, "MASQ_BATCH_SIZE"],
    ["MASQ_BATCH_SIZE 1.5", {}, { MASQ_BATCH_SIZE: "1.5" }, "MASQ_BATCH_SIZE"],
    ["MASQ_BATCH_SIZE 1e3", {}, { MASQ_BATCH_SIZE: "1e3" }, "MASQ_BATCH_SIZE"],
    ["MASQ_BATCH_SIZE above 10000", {}, { MASQ_BATCH_SIZE: "10001" }, "MASQ_BATCH_SIZE"],
    ["--batch-size abc", { batchSize: "abc" }, {}, "--batch-size"],
    ["MASQ_WAIT_TIME_SECONDS 21", {}, { MASQ_WAIT_TIME_SECONDS: "21" }, "MASQ_WAIT_TIME_SECONDS"],
    ["MASQ_VISIBILITY_TIMEOUT 4", {}, { MASQ_VISIBILITY_TIMEOUT: "4" }, "MASQ_VISIBILITY_TIMEOUT"],
    ["MASQ_RECEIVERS 0", {}, { MASQ_RECEIVERS: "0" }, "MASQ_RECEIVERS"],
    ["MASQ_WRITERS 33", {}, { MASQ_WRITERS: "33" }, "MASQ_WRITERS"],
    ["MASQ_PREPARE_THREADS -1", {}, { MASQ_PREPARE_THREADS: "-1" }, "MASQ_PREPARE_THREADS"],
    ["MASQ_PREPARE_THREADS two", {}, { MASQ_PREPARE_THREADS: "two" }, "MASQ_PREPARE_THREADS"],
    ["MASQ_PREPARE_THREADS 33", {}, { MASQ_PREPARE_THREADS: "33" }, "MASQ_PREPARE_THREADS"],
    ["MASQ_SHUTDOWN_TIMEOUT_MS 999", {}, { MASQ_SHUTDOWN_TIMEOUT_MS: "999" }, "MASQ_SHUTDOWN_TIMEOUT_MS"],
    ["MASQ_SQS_PROTOCOL xml", {}, { MASQ_SQS_PROTOCOL: "xml" }, "MASQ_SQS_PROTOCOL"],
    ["--sqs-protocol xml", { sqsProtocol: "xml" }, {}, "--sqs-protocol"],
    ["AWS_REGION with a space and a bang", {}, { AWS_REGION: "bad region!" }, "AWS_REGION"],
    ["AWS_DEFAULT_REGION with a slash", {}, { AWS_DEFAULT_REGION: "us/east" }, "AWS_DEFAULT_REGION"],
    ["MASQ_LOG_LEVEL loud", {}, { MASQ_LOG_LEVEL: "loud" }, "MASQ_LOG_LEVEL"],
    ["MASQ_TABLE with SQL in it", {}, { MASQ_TABLE: 'logins"; drop table x; --' }, "MASQ_TABLE"],
    ["MASQ_TABLE of three parts", {}, { MASQ_TABLE: "a.b.c" }, "MASQ_TABLE"],
    ["AWS_ENDPOINT_URL_SQS not a URL", {}, { AWS_ENDPOINT_URL_SQS: "localhost:4566" }, "AWS_ENDPOINT_URL_SQS"],
    ["AWS_ENDPOINT_URL not a URL", {}, { AWS_ENDPOINT_URL: "nope" }, "AWS_ENDPOINT_URL"],
    ["DATABASE_URL not a URL", {}, { DATABASE_URL: "not a url" }, "DATABASE_URL"],
    ["DATABASE_URL without the scheme's slashes", {}, { DATABASE_URL: `postgres//u:${PASSWORD}@h/db` }, "DATABASE_URL"],
    ["DATABASE_URL with a bad port", {}, { DATABASE_URL: `postgres://u:${PASSWORD}@h:99999/db` }, "DATABASE_URL"],
    ["DATABASE_URL of another scheme", {}, { DATABASE_URL: `mysql://u:${PASSWORD}@h/db` }, "DATABASE_URL"],
    ["DATABASE_URL with a space in the host", {}, { DATABASE_URL: `postgres://u:${PASSWORD}@my host/db` }, "DATABASE_URL"],
    ["DATABASE_URL of an http scheme", {}, { DATABASE_URL: "https://example.com/db" }, "DATABASE_URL"],
    ["QUEUE_URL of a postgres scheme", {}, { QUEUE_URL: `postgres://u:${PASSWORD}@h/db` }, "QUEUE_URL"],
    ["AWS_ENDPOINT_URL_SQS of a postgres scheme", {}, { AWS_ENDPOINT_URL_SQS: "postgres://h:5432" }, "AWS_ENDPOINT_URL_SQS"],
    ["--max-in-flight below --batch-size", { maxInFlight: "100", batchSize: "200" }, {}, "--max-in-flight"],
    ["--database-url invalid", { databaseUrl: `postgres://u:${PASSWORD}@h:port/db` }, {}, "--database-url"],
    ["MASQ_MAX_IN_FLIGHT below the default batch size", {}, { MASQ_MAX_IN_FLIGHT: "500" }, "MASQ_MAX_IN_FLIGHT"],
    ["MASQ_MAX_IN_FLIGHT below MASQ_BATCH_SIZE", {}, { MASQ_BATCH_SIZE: "200", MASQ_MAX_IN_FLIGHT: "100" }, "MASQ_MAX_IN_FLIGHT"],
    ["MASQ_MAX_IN_FLIGHT_BYTES below 1 MiB", {}, { MASQ_MAX_IN_FLIGHT_BYTES: "65536" }, "MASQ_MAX_IN_FLIGHT_BYTES"],
    ["no master key at all", {}, { MASQ_MASTER_KEY: undefined }, "MASQ_MASTER_KEY"],
    ["MASQ_KEY_PROVIDER unknown", {}, { MASQ_KEY_PROVIDER: "vault" }, "MASQ_KEY_PROVIDER"],
    ["MASQ_KEY_PROVIDER=kms without MASQ_KMS_KEY_ID", {}, { MASQ_KEY_PROVIDER: "kms" }, "MASQ_KMS_KEY_ID"],
    ["MASQ_KEY_PROVIDER=local without MASQ_MASTER_KEY", {}, { MASQ_KEY_PROVIDER: "local", MASQ_MASTER_KEY: undefined }, "MASQ_MASTER_KEY"],
    ["MASQ_MASTER_KEY of 31 bytes", {}, { MASQ_MASTER_KEY: MASTER_HEX.slice(2) }, "MASQ_MASTER_KEY"],
    ["MASQ_MASTER_KEY of 33 bytes", {}, { MASQ_MASTER_KEY: `${MASTER_HEX}20` }, "MASQ_MASTER_KEY"],
    ["MASQ_MASTER_KEY_FILE unreadable", {}, { MASQ_MASTER_KEY: undefined, MASQ_MASTER_KEY_FILE: "/nonexistent/master.key" }, "MASQ_MASTER_KEY_FILE"],
    ["MASQ_MASTER_KEY_PREVIOUS with a short key", {}, { MASQ_MASTER_KEY_PREVIOUS: `${MASTER_HEX},abcd` }, "MASQ_MASTER_KEY_PREVIOUS"],
    ["AWS_ENDPOINT_URL_KMS not a URL", {}, { MASQ_MASTER_KEY: undefined, MASQ_KMS_KEY_ID: "alias/masq", AWS_ENDPOINT_URL_KMS: "kms:4566" }, "AWS_ENDPOINT_URL_KMS"],
    ["both providers' keys, no MASQ_KEY_PROVIDER", {}, { MASQ_KMS_KEY_ID: "alias/masq" }, "MASQ_KEY_PROVIDER"],
    ["MASQ_DATA_KEY_MAX_USES zero", {}, { MASQ_DATA_KEY_MAX_USES: "0" }, "MASQ_DATA_KEY_MAX_USES"],
    ["MASQ_DATA_KEY_MAX_AGE_SECONDS not a number", {}, { MASQ_DATA_KEY_MAX_AGE_SECONDS: "1h" }, "MASQ_DATA_KEY_MAX_AGE_SECONDS"],
    ["MASQ_PSEUDONYM_KEY too short", {}, { MASQ_PSEUDONYM_KEY: TEST_KEY_HEX.slice(2) }, "MASQ_PSEUDONYM_KEY"],
    ["MASQ_MIGRATE banana", {}, { MASQ_MIGRATE: "banana" }, "MASQ_MIGRATE"],
    ["MASQ_MIGRATE fasle", {}, { MASQ_MIGRATE: "fasle" }, "MASQ_MIGRATE"],
    ["MASQ_HTTP_HOST with a space", {}, { MASQ_HTTP_HOST: "not a host" }, "MASQ_HTTP_HOST"],
    ["MASQ_HTTP_HOST a dotted quad out of range", {}, { MASQ_HTTP_HOST: "999.1.1.1" }, "MASQ_HTTP_HOST"],
    ["MASQ_HTTP_HOST a URL", {}, { MASQ_HTTP_HOST: "http://0.0.0.0" }, "MASQ_HTTP_HOST"],
    ["--http-host with an underscore", { httpHost: "my_host" }, {}, "--http-host"],
    ["MASQ_PSEUDONYM_KEY_FILE unreadable", {}, { MASQ_PSEUDONYM_KEY: undefined, MASQ_PSEUDONYM_KEY_FILE: "/nonexistent/masq.key" }, "MASQ_PSEUDONYM_KEY_FILE"],
  ];
  for (const [name, flags, env, setting] of cases) {
    test(name, () => {
      const fullEnv: Record<string, string | undefined> = { ...BASE_ENV, ...env };
      assert.throws(
        () => readRunConfig({ flags: flags, env: fullEnv }, false),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, `got ${String(err)}`);
          assert.equal(err.setting, setting);
          assert.ok(err.message.startsWith(`${setting}: `), err.message);
          assert.ok(!err.message.includes(PASSWORD), err.message);
          assert.ok(!err.message.includes(TEST_KEY_HEX.slice(2, 20)), err.message);
          return true;
        },
      );
    });
  }
});

describe("the spec is what the reader follows", () => {
  const declared = Object.values(SETTINGS) as Setting<unknown>[];
  /** Everything the settings of `masq run` and the one-shot commands come to, from one environment. */
  const everything = (env: NodeJS.ProcessEnv) => ({
    run: readRunConfig({ flags: {}, env }, false),
    connect: readConnectTimeoutMs({ flags: {}, env }),
    logFormat: readLogFormat({ flags: {}, env }),
    retention: readRetentionDays({ flags: {}, env }),
    contract: readContractFile({ flags: {}, env }),
    file: settingSources({}, env).file,
  });

  test("a default shown as a value (first, in a code span) is what the reader uses when the setting is unset", () => {
    // Setting a variable to the default that --help and the docs show must change nothing.
    const problems: string[] = [];
    let checked = 0;
    for (const s of declared) {
      const shown = /^`([^`]+)`/.exec(shownDefault(s) ?? "")?.[1];
      if (shown === undefined || s.env in BASE_ENV) continue;
      checked++;
      try {
        if (!isDeepStrictEqual(everything({ ...BASE_ENV, [s.env]: shown }), everything(BASE_ENV))) problems.push(`${s.env}: the reader's default is not ${shown}`);
      } catch (err) {
        problems.push(`${s.env}: the default shown, ${shown}, is refused (${(err as Error).message})`);
      }
    }
    assert.ok(checked >= 15, `only ${checked} defaults checked`);
    assert.deepEqual(problems, []);
  });

  test("every declared setting is read (a declaration no reader uses would document a setting that does nothing)", () => {
    const looked = new Set<string>();
    for (const given of [BASE_ENV, { QUEUE_URL: AWS_QUEUE, MASQ_KMS_KEY_ID: "alias/masq" }]) {
      const env = new Proxy<NodeJS.ProcessEnv>(given, {
        get: (target, name) => {
          if (typeof name !== "string") return undefined;
          looked.add(name);
          return target[name];
        },
      });
      everything(env);
    }
    assert.deepEqual(declared.flatMap(envNames).filter((n) => !looked.has(n)), []);
  });

  test("a fallback variable is read only when the setting's own is unset, and errors name the one given", () => {
    assert.equal(readRunConfig({ flags: {}, env: { ...BASE_ENV, AWS_DEFAULT_REGION: "eu-central-1", AWS_REGION: "" } }, false).region, "eu-central-1");
    assert.throws(() => readRunConfig({ flags: {}, env: { ...BASE_ENV, AWS_DEFAULT_REGION: "bad region" } }, false), (e: Error) => e instanceof ConfigError && e.setting === "AWS_DEFAULT_REGION");
  });
});

describe("the Lambda handler's settings", () => {
  const LAMBDA_ENV = { MASQ_MASTER_KEY: MASTER_HEX };
  test("defaults", () => {
    assert.deepEqual(readLambdaConfig(LAMBDA_ENV), {
      logLevel: "info",
      databaseUrl: undefined,
      table: { schema: "public", name: "user_logins" },
      keys: LOCAL_KEYS,
      pseudonymKeyOverride: undefined,
      batchSize: 1000,
      migrate: true,
      contract: undefined,
    });
  });
  test("MASQ_CONTRACT", () => assert.equal(readLambdaConfig({ ...LAMBDA_ENV, MASQ_CONTRACT: " contracts/examples/purchase.yaml " }).contract, "contracts/examples/purchase.yaml"));
  // MASQ_MIGRATE is parsed as everywhere else: before, the handler took only "false" and "0" as off.
  for (const [value, migrate] of [["no", false], ["OFF", false], ["false", false], ["0", false], ["yes", true], ["1", true]] as const) {
    test(`MASQ_MIGRATE=${value}`, () => assert.equal(readLambdaConfig({ ...LAMBDA_ENV, MASQ_MIGRATE: value }).migrate, migrate));
  }
  test("an invalid MASQ_MIGRATE is a configuration error naming it", () => {
    assert.throws(() => readLambdaConfig({ ...LAMBDA_ENV, MASQ_MIGRATE: "banana" }), (e: Error) => e instanceof ConfigError && e.setting === "MASQ_MIGRATE");
  });

  test("a config file is refused, not ignored: a function's settings are its environment variables", () => {
    assert.throws(() => readLambdaConfig({ ...LAMBDA_ENV, MASQ_CONFIG: "/var/task/masq.yaml" }), (e: Error) => e instanceof ConfigError && e.setting === "MASQ_CONFIG");
  });
});

describe("settings that commands read beside run's", () => {
  test("masq top watches the port MASQ_HTTP_PORT names, and refuses one that is not a port rather than guessing", () => {
    assert.deepEqual(readWatchedPort({ flags: {}, env: { MASQ_HTTP_PORT: "9100" } }), { port: 9100, setting: "MASQ_HTTP_PORT" });
    for (const port of [undefined, "", "0", "off"]) assert.equal(readWatchedPort({ flags: {}, env: { MASQ_HTTP_PORT: port } }), undefined, String(port));
    assert.throws(() => readWatchedPort({ flags: {}, env: { MASQ_HTTP_PORT: "http" } }), (e: unknown) => e instanceof ConfigError && e.setting === "MASQ_HTTP_PORT");
  });

  test("a command names its table with --table or MASQ_TABLE; an empty one names none", () => {
    assert.equal(readNamedTable({ flags: {}, env: {} }), undefined);
    assert.equal(readNamedTable({ flags: {}, env: { MASQ_TABLE: "" } }), undefined);
    assert.deepEqual(readNamedTable({ flags: {}, env: { MASQ_TABLE: "ingest.logins" } }), { schema: "ingest", name: "logins" });
    assert.deepEqual(readNamedTable({ flags: { table: "a.b" }, env: { MASQ_TABLE: "ingest.logins" } }), { schema: "a", name: "b" });
  });

  test("whether a master key is configured: any of the three settings, valid or not", () => {
    assert.equal(hasMasterKey({ flags: {}, env: {} }), false);
    assert.equal(hasMasterKey({ flags: {}, env: { MASQ_MASTER_KEY: "" } }), false);
    for (const name of ["MASQ_KMS_KEY_ID", "MASQ_MASTER_KEY", "MASQ_MASTER_KEY_FILE"]) assert.equal(hasMasterKey({ flags: {}, env: { [name]: "x" } }), true, name);
  });
});

describe("a config file", () => {
  const dir = mkdtempSync(join(tmpdir(), "masq-config-unit-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "settings.yaml");
  writeFileSync(file, "MASQ_BATCH_SIZE: 500\nMASQ_MAX_IN_FLIGHT: 400\nMASQ_WRITERS: 3\nAWS_REGION: eu-west-2\n", { mode: 0o600 });
  const src = (flags: Record<string, unknown>, env: NodeJS.ProcessEnv) => settingSources({ config: file, ...flags }, env);

  test("sits under the flags and the environment, over the defaults, setting by setting", () => {
    const fromFile = readPipelineConfig(src({ maxInFlight: "5000" }, {}));
    assert.deepEqual([fromFile.batchSize, fromFile.writers, fromFile.receivers], [500, 3, 8]);
    const fromEnv = readPipelineConfig(src({ maxInFlight: "5000" }, { MASQ_BATCH_SIZE: "200", MASQ_WRITERS: "" }));
    assert.deepEqual([fromEnv.batchSize, fromEnv.writers], [200, 3], "an empty variable leaves the file's value");
    const fromFlag = readPipelineConfig(src({ batchSize: "50", maxInFlight: "5000" }, { MASQ_BATCH_SIZE: "200" }));
    assert.equal(fromFlag.batchSize, 50);
    assert.equal(readRegion(src({}, {})), "eu-west-2");
    assert.equal(readRegion(src({}, { AWS_DEFAULT_REGION: "eu-central-1" })), "eu-central-1", "the environment's fallback beats the file");
  });

  test("a check across settings names the file's key and line:col", () => {
    assert.throws(
      () => readPipelineConfig(src({}, {})),
      (e: unknown) => e instanceof ConfigError && e.setting === `MASQ_MAX_IN_FLIGHT in ${file}:2:21` && /at least the batch size \(500\)/.test(e.problem),
    );
  });

  test("is named by --config over MASQ_CONFIG, and read only when named", () => {
    assert.equal(settingSources({}, {}).file, undefined);
    assert.equal(settingSources({}, { MASQ_CONFIG: file }).file?.path, file);
    assert.throws(() => settingSources({ config: join(dir, "absent.yaml") }, { MASQ_CONFIG: file }), (e: unknown) => e instanceof ConfigError && e.setting === "--config");
  });
});
