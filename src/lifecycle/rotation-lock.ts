import type pg from "pg";
import { FatalError } from "../errors.ts";
import { connect, query } from "../db/query.ts";

/**
 * Runs `fn` while this session holds masq's rotation lock: one rotation (of either kind) at a time. A session-level
 * advisory lock, so a rotation killed mid-way frees it with its connection, and the next run resumes.
 */
export async function withRotationLock<T>(pool: pg.Pool, fn: () => Promise<T>): Promise<T> {
  const client = await connect(pool);
  let locked: boolean;
  try {
    locked = (await query<{ ok: boolean }>(client, "SELECT pg_try_advisory_lock(hashtext('masq.rotate')) AS ok")).rows[0]?.ok === true;
  } catch (err) {
    client.release();
    throw err;
  }
  if (!locked) {
    client.release();
    throw new FatalError("another `masq rotate` is running against this database; wait for it (or stop it) and run again");
  }
  try {
    return await fn();
  } finally {
    // A connection that cannot unlock is destroyed, which frees the lock as well.
    const unlocked = await client.query("SELECT pg_advisory_unlock(hashtext('masq.rotate'))").then(
      () => true,
      () => false,
    );
    client.release(!unlocked);
  }
}
