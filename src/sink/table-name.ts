/** A schema-qualified table name, quoted safely wherever it is put into SQL. */
export interface TableName {
  schema: string;
  name: string;
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;

/** "user_logins" or "analytics.user_logins". Only plain identifiers: no quoting games in a setting. */
export function parseTableName(text: string): TableName {
  const parts = text.trim().split(".");
  if (parts.length > 2 || parts.some((p) => !IDENT.test(p))) {
    throw new Error(`must be a table name or schema.table made of letters, digits and _ (got "${text}")`);
  }
  return parts.length === 2 ? { schema: parts[0]!, name: parts[1]! } : { schema: "public", name: parts[0]! };
}

export function quoteIdent(id: string): string {
  return `"${id.replace(/"/g, '""')}"`;
}

export function qualified(t: TableName): string {
  return `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`;
}
