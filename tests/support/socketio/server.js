// A real socket.io server on the socket.io Redis adapter, for reaper's tests.
//   node server.js --redis URL [--prefix socket.io] [--namespace /] [--specific-response]
// Listens on a free port and prints JSON lines on stdout: listening, connection, disconnect.
"use strict";
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-adapter");

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : fallback;
};
const say = (event, fields) => process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");

async function main() {
  const pub = createClient({ url: option("--redis") });
  const sub = pub.duplicate();
  for (const client of [pub, sub]) client.on("error", (err) => say("redis_error", { message: String(err) }));
  await Promise.all([pub.connect(), sub.connect()]);
  const http = createServer();
  const io = new Server(http, {
    adapter: createAdapter(pub, sub, {
      key: option("--prefix", "socket.io"),
      publishOnSpecificResponseChannel: args.includes("--specific-response"),
    }),
  });
  const nsp = io.of(option("--namespace", "/"));
  nsp.on("connection", (socket) => {
    say("connection", { id: socket.id });
    socket.on("disconnect", (reason) => say("disconnect", { id: socket.id, reason }));
    // "forced close" when the server closed the connection itself (disconnect(true))
    socket.conn.on("close", (reason) => say("connection_closed", { id: socket.id, reason }));
  });
  http.listen(0, "127.0.0.1", () => say("listening", { port: http.address().port, pid: process.pid }));
}

main().catch((err) => {
  say("fatal", { message: String(err) });
  process.exit(1);
});
