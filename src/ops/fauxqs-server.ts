import { startFauxqs } from "fauxqs";

/**
 * Entry point of a fauxqs server in a process of its own (see fauxqs.ts). Request logging is off: on a
 * small machine it would cost the server more CPU than answering. With FAUXQS_DATA_DIR its state lives in SQLite
 * there, so a restart on the same port finds its queues and messages; without it, state is in memory.
 */

const port = Number(process.env.FAUXQS_PORT);
const dataDir = process.env.FAUXQS_DATA_DIR;
await startFauxqs({ port, logger: false, ...(dataDir ? { dataDir } : {}) });
// The parent holds our stdin open; when it goes away (even by SIGKILL), so do we.
process.stdin.on("end", () => process.exit(0)).resume();
