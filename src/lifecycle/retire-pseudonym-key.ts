import type pg from "pg";
import { FatalError } from "../errors.ts";
import { inTransaction } from "../sink/transaction.ts";
import { query } from "../db/query.ts";
import { readRotationState, type RotationState } from "./rotation-state.ts";

/**
 * The end of a rotation: once no vault row has the old version and the table pass has done every registered table
 * (rewrite-tables.ts: until then the map is their rows' only way to the vault), the old key is retired and its key
 * material destroyed (wrapped set to NULL), and the rotation map, the last link between old and new pseudonyms, is
 * emptied.
 * One transaction, with the rotation's audit row (`audit`, appended before the key is retired). Returns the
 * rotation's final counts.
 */
export async function retirePseudonymKey(
  pool: pg.Pool,
  fromVersion: number,
  audit: (client: pg.PoolClient, final: RotationState) => Promise<unknown>,
): Promise<RotationState> {
  const final = await inTransaction(pool, async (client) => {
    const state = await readRotationState(client);
    if (state?.fromVersion !== fromVersion) throw new FatalError(`no rotation of pseudonym key version ${fromVersion} is in progress`);
    const left = await query(client, "SELECT 1 FROM masq.vault WHERE key_version = $1 LIMIT 1", [fromVersion]);
    if ((left.rowCount ?? 0) > 0) throw new FatalError(`the vault still holds values under pseudonym key version ${fromVersion}; run the rotation again with --resume`);
    const undone = await query<{ t: string }>(
      client,
      "SELECT r.schema_name || '.' || r.table_name AS t FROM masq.registered_tables() r WHERE NOT (r.schema_name || '.' || r.table_name = ANY ($1::text[]))",
      [state.tablesDone],
    );
    if (undone.rows.length > 0) {
      throw new FatalError(`the rotation has not rewritten ${undone.rows.map((r) => r.t).join(", ")} yet; run the rotation again with --resume`);
    }
    await audit(client, state);
    await query(client, "UPDATE masq.pseudonym_keys SET state = 'retired', retired_at = now(), wrapped = NULL WHERE version = $1 AND state = 'retiring'", [fromVersion]);
    await query(client, "DELETE FROM masq.pseudonym_rotation WHERE from_version = $1", [fromVersion]);
    // TRUNCATE, not DELETE: the map's pages go at once instead of lingering as dead rows until a vacuum.
    await query(client, "TRUNCATE masq.pseudonym_rotation_map");
    return state;
  });
  // The retired key's wrapped form lingers in the old row version until a vacuum; this table is tiny.
  await pool.query("VACUUM masq.pseudonym_keys").catch(() => undefined);
  return final;
}
