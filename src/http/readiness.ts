import type pg from "pg";
import { describeError, errorLine } from "../errors.ts";
import { fromPostgres } from "../sink/pg-errors.ts";
import { targetText, type PgTarget } from "../sink/pg-target.ts";
import { loadMigrations } from "../sink/migrate.ts";
import type { QueueSource } from "../source/sqs-source.ts";

export interface Check {
  ok: boolean;
  detail?: string;
}

export interface Readiness {
  ready: boolean;
  checks: { postgres: Check; migrations: Check; sqs: Check };
}

/**
 * Ready means: Postgres answers, its schema is at the migration this masq ships, and SQS answers for the queue.
 * Results are cached briefly so a probe every second costs one round trip every few seconds, not one per probe.
 */
export function readinessProbe(opts: {
  pool: pg.Pool;
  /** Undefined until masq knows the endpoint's protocol (run.ts); sqsNotReady says what it is waiting for then. */
  source: () => QueueSource | undefined;
  sqsNotReady?: () => string;
  cacheMs?: number;
  /** Named in a failing check's detail, so the probe says which setting to look at. */
  targets?: { postgres: PgTarget; sqs: string };
}): () => Promise<Readiness> {
  const expected = loadMigrations().at(-1)?.version ?? 0;
  const cacheMs = opts.cacheMs ?? 5_000;
  let cached: { at: number; value: Promise<Readiness> } | undefined;

  const check = async (): Promise<Readiness> => {
    const timeout = AbortSignal.timeout(4_000);
    const [postgres, migrations] = await (async (): Promise<[Check, Check]> => {
      try {
        // A pool waiting for a connection to a dead server would outlast the probe: bound it.
        const { rows } = await Promise.race([
          opts.pool.query<{ v: number | null }>("SELECT (SELECT max(version) FROM masq.schema_migrations) AS v"),
          new Promise<never>((_, reject) => timeout.addEventListener("abort", () => reject(new Error("Postgres did not answer within 4 s")))),
        ]);
        const v = rows[0]?.v ?? 0;
        return [{ ok: true }, v === expected ? { ok: true } : { ok: false, detail: `schema at migration ${v}, this masq needs ${expected}` }];
      } catch (err) {
        // An undefined table means Postgres is up but masq's schema is not: report that as the migrations check.
        if ((err as { code?: string }).code === "42P01") return [{ ok: true }, { ok: false, detail: "migrations not applied" }];
        const known = opts.targets ? fromPostgres(err, opts.targets.postgres) : err;
        const e = known === err ? describeError(err) : errorLine(known).replace(/^masq: /, "");
        const where = opts.targets ? ` (${targetText(opts.targets.postgres)})` : "";
        return [{ ok: false, detail: e.includes(where) ? e : `${e}${where}` }, { ok: false, detail: "unknown: Postgres unreachable" }];
      }
    })();
    let sqs: Check;
    const source = opts.source();
    if (source === undefined) sqs = { ok: false, detail: opts.sqsNotReady?.() ?? "not connected yet" };
    else {
      try {
        await source.counts(timeout);
        sqs = { ok: true };
      } catch (err) {
        sqs = { ok: false, detail: `${describeError(err)}${opts.targets ? ` (${opts.targets.sqs})` : ""}` };
      }
    }
    return { ready: postgres.ok && migrations.ok && sqs.ok, checks: { postgres, migrations, sqs } };
  };

  return () => {
    const now = Date.now();
    if (cached === undefined || now - cached.at > cacheMs) cached = { at: now, value: check() };
    return cached.value;
  };
}
