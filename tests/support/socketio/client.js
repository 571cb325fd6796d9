// A real socket.io client, for reaper's tests.
//   node client.js URL
// Prints JSON lines on stdout: connect (with its socket id), every event received, disconnect;
// exits after a disconnect (no reconnection: a fenced client must stay gone).
"use strict";
const { io } = require("socket.io-client");

const say = (event, fields) => process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
const socket = io(process.argv[2], { transports: ["websocket"], reconnection: false });
socket.on("connect", () => say("connect", { id: socket.id }));
socket.on("connect_error", (err) => say("connect_error", { message: String(err) }));
socket.onAny((name, ...args) => say("message", { name, args }));
socket.on("disconnect", (reason) => {
  say("disconnect", { reason });
  process.exit(0);
});
