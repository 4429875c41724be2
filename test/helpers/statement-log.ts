import { appendFileSync } from "node:fs";
import pg from "pg";

/**
 * A preload for a masq process under test (NODE_OPTIONS=--import=<this file>): every statement its pg clients send,
 * in order, appended at exit as one JSON line {argv, statements} to $MASQ_TEST_STATEMENT_LOG. Each statement is one
 * round trip to Postgres; the test reads what a command sent and in which order, without touching masq's code.
 */
const file = process.env.MASQ_TEST_STATEMENT_LOG;
if (file !== undefined) {
  const sent: string[] = [];
  const proto = pg.Client.prototype as unknown as { query: (config: unknown, ...rest: unknown[]) => unknown };
  const query = proto.query;
  proto.query = function (this: unknown, config: unknown, ...rest: unknown[]) {
    const text = typeof config === "string" ? config : ((config as { text?: string } | null)?.text ?? "(cursor)");
    sent.push(text.replace(/\s+/g, " ").trim());
    return query.call(this, config, ...rest);
  };
  process.on("exit", () => appendFileSync(file, `${JSON.stringify({ argv: process.argv.slice(2), statements: sent })}\n`));
}
