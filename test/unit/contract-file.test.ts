import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { Ajv } from "ajv";
import { parse } from "yaml";
import { readContract } from "../../src/contracts/read-contract.ts";

const read = (name: string) => readFileSync(new URL(`../../contracts/${name}`, import.meta.url), "utf8");
const SHIPPED = ["login.yaml", "examples/purchase.yaml", "examples/page-view.yaml"];
const schema = JSON.parse(read("contract.schema.json")) as object;
const validate = new Ajv({ allErrors: true, strict: true, strictRequired: false }).compile(schema);

/** A small good contract, changed by `edit` (one line replaced by others) to make a broken one. */
const GOOD = `version: 1
events:
  signup:
    match: all
    table: signups
    subject: user_id
    unknown: quarantine
    fields:
      user_id:
        type: string
        max_length: 64
        treatment: keep
        column: user_id
      email:
        type: string
        max_length: 320
        treatment: pseudonymize
        kind: email
        column: masked_email
      age:
        type: integer
        treatment: generalize
        bucket: 10
        column: age_bucket
`;

function errorsOf(text: string): string[] {
  const r = readContract(text);
  return r.errors.map((e) => `${e.line}:${e.col}: ${e.message}`);
}

describe("contract files", () => {
  for (const name of SHIPPED) {
    test(`${name} reads and the JSON Schema accepts it`, () => {
      assert.deepEqual(errorsOf(read(name)), []);
      assert.ok(validate(parse(read(name))), JSON.stringify(validate.errors));
    });
  }

  test("a good contract reads", () => {
    const r = readContract(GOOD);
    assert.deepEqual(r.errors, []);
    assert.deepEqual(
      r.contract!.events[0]!.fields.map((f) => [f.path, f.type, f.treatment, f.column]),
      [
        ["user_id", "string", { name: "keep" }, "user_id"],
        ["email", "string", { name: "pseudonymize", kind: "email" }, "masked_email"],
        ["age", "integer", { name: "generalize", bucket: 10 }, "age_bucket"],
      ],
    );
  });

  // Each broken file: every error, with its line and column, and whether the JSON Schema catches it too.
  const broken: [name: string, text: string, errors: string[], schemaRejects: boolean][] = [
    ["not YAML", "version: 1\nevents: [\n", ["3:1: Flow sequence in block collection must be sufficiently indented and end with a ]"], true],
    ["a duplicate field", GOOD.replace("      age:", "      email:"), ["20:7: Map keys must be unique"], true],
    ["another version", GOOD.replace("version: 1", "version: 2"), ["1:10: version must be 1"], true],
    [
      "a misspelt type and treatment",
      GOOD.replace("type: integer", "type: int").replace("treatment: keep", "treatment: clear"),
      [
        "12:20: event type signup, field user_id: treatment must be one of pseudonymize, hash, generalize, keep, drop, not clear",
        "21:15: event type signup, field age: type must be one of string, integer, boolean, timestamp, ip, semver, object, not int",
      ],
      true,
    ],
    [
      "a treatment the type does not allow, and a kind missing",
      GOOD.replace("        type: integer\n        treatment: generalize\n        bucket: 10", "        type: boolean\n        treatment: hash").replace("        kind: email\n", ""),
      [
        "14:7: event type signup, field email: pseudonymize needs a kind (its pseudonyms' domain, e.g. ip or email)",
        "21:20: event type signup, field age: a boolean field can be keep, drop, not hash",
        "19:7: event type signup, field age: hash needs a kind (its pseudonyms' domain, e.g. ip or email)",
      ].sort(),
      true,
    ],
    [
      "a subject that is not a field, an unknown key, a column twice",
      GOOD.replace("subject: user_id", "subject: customer").replace("unknown: quarantine", "unknown: quarantine\n    retention: 30d").replace("column: age_bucket", "column: user_id"),
      [
        "6:14: event type signup: subject customer is not one of its fields",
        "8:5: event type signup: unknown key retention (expected one of match, envelope, table, subject, unknown, fields)",
        "21:7: event type signup: fields user_id and age both write column user_id",
      ],
      true,
    ],
    [
      "a string without max_length, a dropped field with a column",
      GOOD.replace("        max_length: 64\n", "").replace("treatment: pseudonymize\n        kind: email\n", "treatment: drop\n"),
      ["9:7: event type signup, field user_id: a string field needs max_length", "17:17: event type signup, field email: a dropped field has no column"],
      true,
    ],
    // Found by a red-team review: each of these made masq register, erase or reveal what it must not.
    ["a table in masq's or Postgres's own schema", GOOD.replace("table: signups", "table: pg_catalog.pg_authid"), ["5:12: event type signup: table pg_catalog.pg_authid is in schema pg_catalog, which holds masq's or Postgres's own tables; choose another schema"], false],
    ["a table in schema masq", GOOD.replace("table: signups", "table: masq.vault"), ["5:12: event type signup: table masq.vault is in schema masq, which holds masq's or Postgres's own tables; choose another schema"], false],
    [
      "a hashed subject (erasure would match nothing)",
      GOOD.replace("        treatment: keep\n        column: user_id", "        treatment: hash\n        kind: user\n        column: user_id"),
      ["6:14: event type signup: subject user_id must be kept (treatment: keep): export and erasure find a subject by its value"],
      false,
    ],
    [
      "one kind both pseudonymized and hashed (a hash would unmask)",
      GOOD.replace("        type: integer\n        treatment: generalize\n        bucket: 10", "        type: integer\n        treatment: hash\n        kind: email"),
      ["3:3: event type signup, field age: kind email is pseudonymized in event type signup, field email; one kind is either pseudonymized or hashed (choose another kind)"],
      false,
    ],
    [
      "the login's kind ip hashed",
      GOOD.replace("        treatment: pseudonymize\n        kind: email", "        treatment: hash\n        kind: ip"),
      ["3:3: event type signup, field email: kind ip is pseudonymized in the login table's masked_ip; one kind is either pseudonymized or hashed (choose another kind)"],
      false,
    ],
    ["a create_date that is not a day", GOOD.replace("column: age_bucket", "column: create_date"), ["20:7: event type signup: column create_date must be a required timestamp generalized to the day (such as $sent_at), not field age"], false],
    ["an SNS field without the envelope", GOOD.replace("    fields:\n", "    fields:\n      $sns.MessageId: { type: string, treatment: drop }\n"), ["9:7: event type signup: field $sns.MessageId exists only with envelope: sns"], false],
  ];
  for (const [name, text, errors, schemaRejects] of broken) {
    test(`broken: ${name}`, () => {
      const got = errorsOf(text);
      assert.deepEqual([...got].sort(), [...errors].sort());
      if (schemaRejects) {
        let doc: unknown;
        try {
          doc = parse(text);
        } catch {
          return; // not YAML: no editor validates it either
        }
        assert.equal(validate(doc), false, `the schema accepts ${name}`);
      }
    });
  }
});
