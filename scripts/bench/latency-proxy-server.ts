/**
 * A TCP proxy that holds every chunk from the client for a fixed time before passing it to the server, so each
 * request reaches the SQS server `LATENCY_MS` late: a round-trip time like real AWS's, in front of a local server.
 * Responses pass at once. Timers of equal duration fire in the order they were set, so byte order is kept.
 * Run by latency-proxy.ts in a process of its own, so its work is not the caller's; prints its port when ready.
 */
import { connect, createServer } from "node:net";

const delay = Number(process.env.LATENCY_MS);
const target = Number(process.env.TARGET_PORT);

const server = createServer((client) => {
  client.setNoDelay(true);
  const upstream = connect(target, "127.0.0.1");
  upstream.setNoDelay(true);
  const drop = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", drop).on("close", drop);
  upstream.on("error", drop).on("close", drop);
  client.on("data", (chunk) => {
    setTimeout(() => upstream.write(chunk), delay);
  });
  upstream.pipe(client);
});
server.listen(0, "127.0.0.1", () => {
  const addr = server.address();
  process.stdout.write(`${typeof addr === "object" && addr !== null ? addr.port : 0}\n`);
});
// The parent holds our stdin open; when it goes away (even by SIGKILL), so do we.
process.stdin.on("end", () => process.exit(0)).resume();
