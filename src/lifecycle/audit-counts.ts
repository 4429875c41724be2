import type { AuditRow } from "./audit-row.ts";

/**
 * What an audit row covers, counted in the units of its action. The row's value_count column is the number of its
 * subjects (cardinality, migration 005), which is the number of values only for unmask and pseudonym: an export
 * names one subject, its user, and records what it showed in its selector (rows, values, quarantined messages).
 */
export function auditCounts(r: Pick<AuditRow, "action" | "selector" | "subjects" | "value_count">): Record<string, number> {
  const s = JSON.parse(r.selector) as Record<string, unknown>;
  const num = (k: string) => Number(s[k] ?? 0);
  switch (r.action) {
    case "unmask":
    case "pseudonym":
      return { values: r.subjects.length };
    case "subject-export":
      return { rows: num("rows"), values: num("values"), quarantined: num("quarantined") };
    case "subject-erase":
      return s.phase === "start" ? { users: r.subjects.length } : { rows: num("rows"), quarantine: num("quarantine"), originals: num("originals"), vault: num("vault") };
    case "vault-prune":
      return s.pass === "quarantine" ? { quarantine: r.subjects.length } : { vault: r.subjects.length };
    case "quarantine-original":
    case "replay":
      return { originals: r.subjects.length };
    case "rotate-master-key":
    case "rotate-pseudonym-key":
      return {};
    default:
      return { subjects: r.value_count };
  }
}

const UNITS: Record<string, string> = {
  values: "value(s)",
  rows: "row(s)",
  quarantined: "quarantined message(s)",
  users: "user(s)",
  quarantine: "quarantine record(s)",
  originals: "original(s)",
  vault: "vault value(s)",
  subjects: "subject(s)",
};

/** "144 row(s), 34 value(s), 0 quarantined message(s)"; "keys only" for a rotation. */
export function auditCountsText(counts: Record<string, number>): string {
  const parts = Object.entries(counts).map(([k, n]) => `${n.toLocaleString("en-US")} ${UNITS[k] ?? k}`);
  return parts.length === 0 ? "keys only" : parts.join(", ");
}
