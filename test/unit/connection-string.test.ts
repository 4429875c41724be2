import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { parseConnectionString, parseKeywords } from "../../src/db/connection.ts";

const cases: [text: string, expected: Record<string, unknown>][] = [
  ["postgres://masq:p%40ss@db.example:6432/logins", { user: "masq", password: "p@ss", host: "db.example", port: 6432, database: "logins" }],
  ["postgresql://masq@localhost/logins", { user: "masq", host: "localhost", database: "logins" }],
  ["postgresql:///logins?host=/var/run/postgresql", { host: "/var/run/postgresql", database: "logins" }],
  ["postgresql://%2Fvar%2Frun%2Fpostgresql/logins", { host: "/var/run/postgresql", database: "logins" }],
  ["postgresql://", {}],
  ["host=/var/run/postgresql dbname=logins user=masq", { host: "/var/run/postgresql", database: "logins", user: "masq" }],
  ["host = db.example  port= 6432 dbname ='my logins'", { host: "db.example", port: 6432, database: "my logins" }],
  ["password='it''s' user=masq".replace("''", "\\'"), { password: "it's", user: "masq" }],
  ["password=back\\ slash", { password: "back slash" }],
  ["hostaddr=10.0.0.5 dbname=x", { host: "10.0.0.5", database: "x" }],
  ["host=h application_name=masq-a", { host: "h", application_name: "masq-a" }],
  ["logins", { database: "logins" }],
  // A single word is a database name, as for psql, even one that reads like a keyword.
  ["host", { database: "host" }],
];

for (const [text, expected] of cases) {
  test(`connection string ${JSON.stringify(text)}`, () => {
    const got = parseConnectionString(text) as Record<string, unknown>;
    for (const [k, v] of Object.entries(expected)) assert.deepEqual(got[k], v, `${k} of ${text}`);
    for (const k of ["user", "password", "host", "database", "port"]) {
      if (!(k in expected)) assert.equal(got[k], undefined, `${k} left to pg's defaults`);
    }
  });
}

test("sslmode means the same in both forms", () => {
  assert.deepEqual(parseConnectionString("host=h sslmode=verify-full").ssl, parseConnectionString("postgres://h/?sslmode=verify-full").ssl);
  assert.equal(parseConnectionString("host=h sslmode=disable").ssl, false);
});

const refused: [text: string, reason: RegExp][] = [
  ["postgres://h:99999/db", /not a valid postgres:\/\/ URL/],
  ["host=h port=abc", /port that is not a number/],
  ["host=a,b dbname=x", /several hosts/],
  ["postgresql://a:5432,b:5432/x", /several hosts/],
  ["hots=h", /unknown keyword: hots \(known: host,/],
  ["host=h dbname", /a word without "=" after it: dbname/],
  ["host=h dbname='open", /unterminated quoted value for dbname/],
  ["two words", /neither/],
  ["mysql://u:pw@h/db", /must be a postgres:\/\/ or postgresql:\/\/ URL \(got mysql:\/\/\)/],
  ["postgres//u:pw@h/db", /neither/],
  ["", /neither/],
];
for (const [text, reason] of refused) {
  test(`refused: ${JSON.stringify(text)}`, () => assert.throws(() => parseConnectionString(text), reason));
}

test("no error repeats a password, whatever the mistake around it", () => {
  for (const text of ["password=s3cretpw hots=x", "postgres://u:s3cretpw@h:99999/d", "s3cretpw=x", "password='s3cretpw"]) {
    assert.throws(
      () => parseConnectionString(text),
      (err: Error) => !err.message.includes("s3cretpw"),
    );
  }
});

test("property: any values, quoted as libpq quotes them, parse back to themselves", () => {
  const quote = (v: string) => `'${v.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
  const keywords = fc.constantFrom("host", "dbname", "user", "password", "application_name", "options");
  fc.assert(
    fc.property(fc.dictionary(keywords, fc.string({ unit: "grapheme", maxLength: 20 }), { minKeys: 1 }), fc.constantFrom(" ", "  ", "\t", " \n"), (pairs, sep) => {
      const text = Object.entries(pairs)
        .map(([k, v]) => `${k}${sep}=${sep}${quote(v)}`)
        .join(sep);
      assert.deepEqual(parseKeywords(text), new Map(Object.entries(pairs)));
    }),
  );
});

test("property: no input makes the parser do anything but return a config or throw an Error", () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 60 }), (text) => {
      try {
        parseConnectionString(text);
      } catch (err) {
        assert.ok(err instanceof Error);
      }
    }),
  );
});
