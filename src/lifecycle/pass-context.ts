import type pg from "pg";
import type { Pseudonymizer } from "../ingest/pseudonymize.ts";
import type { DataKeys } from "../vault/data-keys.ts";
import type { OpenedDataKeys } from "./opened-data-keys.ts";
import type { RotationState } from "./rotation-state.ts";
import type { Blocker } from "../sink/lock-watch.ts";

/** What each pass of a pseudonym key rotation works with. */
export interface PassContext {
  pool: pg.Pool;
  state: RotationState;
  /** The new key's pseudonymizer. */
  pseudonymizer: Pseudonymizer;
  /** The old key's: a vault value is moved only if it is the old pseudonym's value (it was not planted). */
  previous: Pseudonymizer;
  /** Opens vault values and kept bodies. */
  opened: OpenedDataKeys;
  /** Encrypts vault values again under the rotation's own data key (stored in masq.data_keys). */
  dataKeys: DataKeys;
  /** Values, bodies or table rows per transaction. */
  batchSize: number;
  signal?: AbortSignal | undefined;
  /** After every committed batch: how much of this pass is done, of how much. */
  onBatch?: ((done: number, total: number) => void) | undefined;
  /** A batch ended a session of a masq role that held its rows (SECURITY.md, "Waits"). */
  onBlockerEnded?: ((b: Blocker, what: string) => void) | undefined;
}
