// Cross-checks reaper's msgpack codec against notepack.io, the codec the adapter uses.
// Reads one JSON request per stdin line, answers one JSON line each:
//   {"decode": HEX}   -> {"value": V} or {"error": MESSAGE}
//   {"encode": V}     -> {"hex": HEX}
// In V, {"$bin": HEX} stands for a Buffer (JSON has no bytes).
"use strict";
const msgpack = require("notepack.io");
const readline = require("readline");

const toJson = (value) => {
  if (Buffer.isBuffer(value)) return { $bin: value.toString("hex") };
  if (Array.isArray(value)) return value.map(toJson);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJson(v)]));
  }
  return value;
};
const fromJson = (value) => {
  if (Array.isArray(value)) return value.map(fromJson);
  if (value && typeof value === "object") {
    if (typeof value.$bin === "string") return Buffer.from(value.$bin, "hex");
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fromJson(v)]));
  }
  return value;
};

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const request = JSON.parse(line);
  let answer;
  try {
    answer = "decode" in request
      ? { value: toJson(msgpack.decode(Buffer.from(request.decode, "hex"))) }
      : { hex: msgpack.encode(fromJson(request.encode)).toString("hex") };
  } catch (err) {
    answer = { error: String(err) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
