// The client against the real chat example (`cargo build --example chat`
// first), over real sockets, with the `ws` package as the WebSocket (Node
// 20 has no global one). Run: `npm test`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { once } from "node:events";
import WebSocket from "ws";
import { WsPoolClient, token, FINAL_CLOSE_CODES } from "../src/index.js";

const root = new URL("../../../", import.meta.url).pathname;
const target = process.env.CARGO_TARGET_DIR || `${root}target`;

const freePort = async () => {
  const srv = createServer().listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  return port;
};

/** The chat example on `port`; resolves once it serves. */
const startChat = (port) =>
  new Promise((resolve, reject) => {
    const child = spawn(`${target}/debug/examples/chat`, ["--addr", `127.0.0.1:${port}`], {
      env: { ...process.env, RUST_LOG: "info", NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      if (out.includes("chat on http://")) resolve(child);
    });
    child.on("exit", (code) => reject(new Error(`chat exited with ${code}`)));
  });

const stopChat = async (child) => {
  const exited = once(child, "exit");
  child.kill("SIGINT"); // graceful: every client is closed with 1001
  await exited;
};

let port;
let server;
let url;
before(async () => {
  port = await freePort();
  server = await startChat(port);
  url = `ws://127.0.0.1:${port}/ws`;
});
// Every client a test made, closed at the end whatever happened (a client
// left reconnecting would keep the process alive).
const made = [];
after(async () => {
  for (const c of made) c.close();
  if (server) await stopChat(server);
});

const client = (id, options = {}) => {
  const c = new WsPoolClient(url, { id, WebSocket, minDelay: 50, maxDelay: 200, ...options });
  made.push(c);
  return c;
};

/** `promise`, failing after 5 s. */
const within = (promise) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error("nothing in 5 s")), 5000).unref()),
  ]);

/** The next `event` the client fires (that `pred` accepts), failing
 * after 5 s. */
const next = (c, event, pred = () => true) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} in 5 s`)), 5000);
    const off = c.on(event, (v) => {
      if (!pred(v)) return;
      clearTimeout(timer);
      off();
      resolve(v);
    });
  });

test("binary and JSON clients chat by channel and by id; int64 is a number in both", async () => {
  const alice = client("alice", { channels: ["room1"] });
  const bob = client("bob", { channels: ["room1"], format: "json" });
  await Promise.all([alice.opened(), bob.opened()]);

  const toRoom = next(bob, "message");
  alice.send({ channel: ["room1"], msg: "hello room" });
  const got = await toRoom;
  assert.equal(got.msg, "hello room");
  assert.equal(got.fromClientId, "alice");
  assert.deepEqual(got.channel, ["room1"]);
  assert.equal(typeof got.timestamp, "number");
  assert.ok(got.timestamp > 1_600_000_000_000);

  // Alice is in room1 too: her own broadcast may still be on its way.
  const direct = next(alice, "message", (m) => m.fromClientId === "bob");
  bob.send({ toClientId: "alice", msg: "hi alice", cmdData: "AQI=" });
  const back = await direct;
  assert.equal(back.fromClientId, "bob");
  assert.equal(back.cmdData, "AQI=", "bytes are base64 in both formats");
  assert.equal(typeof back.timestamp, "number");
  alice.close();
  bob.close();
});

test("a receipt from the pool fires receipt, not message", async () => {
  const carol = client("carol");
  await carol.opened();
  let messages = 0;
  carol.on("message", () => messages++);
  const receipt = next(carol, "receipt");
  carol.send({ toClientId: "nobody", msg: "anyone?", msgId: "m-1" });
  const r = await receipt;
  assert.equal(r.status, 4);
  assert.equal(r.msgId, "m-1");
  assert.equal(messages, 0);
  carol.close();
});

test("opened() resolves at once when open and rejects after close(); close() fires 1000 without reconnecting", async () => {
  const dave = client("dave");
  await dave.opened();
  await dave.opened();
  const closed = next(dave, "close");
  dave.close();
  assert.deepEqual(await closed, { code: 1000, reason: "", reconnecting: false });
  await assert.rejects(dave.opened(), /closed/);
  assert.throws(() => dave.send({ toClientId: "x" }), /closed/);
});

test("no reconnect after 4001 (replaced) or 4002 (kicked)", async () => {
  const first = client("erin");
  await first.opened();
  const replaced = next(first, "close");
  const second = client("erin");
  await second.opened();
  assert.deepEqual(await replaced, { code: 4001, reason: "replaced", reconnecting: false });

  const kicked = next(second, "close");
  const res = await fetch(`http://127.0.0.1:${port}/api/clients/erin`, { method: "DELETE" });
  assert.equal(res.status, 200);
  const info = await kicked;
  assert.equal(info.code, 4002);
  assert.equal(info.reconnecting, false);
  assert.ok(FINAL_CLOSE_CODES.includes(4001) && FINAL_CLOSE_CODES.includes(4002));
});

test("a server restart (1001): reconnects with backoff, queues sends up to the bound, flushes them in order", async () => {
  const frank = client("frank", { maxQueued: 2 });
  await frank.opened();
  const down = next(frank, "close");
  await stopChat(server);
  server = null;
  const info = await down;
  assert.equal(info.code, 1001);
  assert.equal(info.reconnecting, true);

  // To itself: what it queued comes back once flushed, in order.
  frank.send({ toClientId: "frank", msg: "one" });
  frank.send({ toClientId: "frank", msg: "two" });
  assert.equal(frank.queued, 2);
  assert.throws(() => frank.send({ toClientId: "frank", msg: "three" }), /2 messages already queued/);

  const got = [];
  const both = new Promise((resolve) =>
    frank.on("message", (m) => {
      got.push(m.msg);
      if (got.length === 2) resolve();
    }),
  );
  server = await startChat(port);
  await frank.opened();
  await within(both);
  assert.deepEqual(got, ["one", "two"]);
  assert.equal(frank.queued, 0);
  frank.close();
});

test("with no WebSocket in the runtime, the client falls back to HTTP and talks with WebSocket clients", async () => {
  // Node 20 has no global WebSocket: without the option, only "http" is usable.
  const viaHttp = client("via-http", { channels: ["mixed"], WebSocket: null });
  const viaJson = client("via-http-json", { channels: ["mixed"], format: "json", WebSocket: null });
  const viaWs = client("via-ws", { channels: ["mixed"] });
  await Promise.all([viaHttp.opened(), viaJson.opened(), viaWs.opened()]);
  assert.equal(viaHttp.transport, "http");
  assert.equal(viaWs.transport, "websocket");

  const atWs = next(viaWs, "message", (m) => m.fromClientId === "via-http");
  const atJson = next(viaJson, "message", (m) => m.fromClientId === "via-http");
  viaHttp.send({ channel: ["mixed"], msg: "from http" });
  assert.equal((await atWs).msg, "from http");
  assert.equal((await atJson).msg, "from http");

  const direct = next(viaHttp, "message", (m) => m.fromClientId === "via-ws");
  viaWs.send({ toClientId: "via-http", msg: "to http", cmdData: "AQI=" });
  const got = await direct;
  assert.equal(got.msg, "to http");
  assert.equal(got.cmdData, "AQI=");
  assert.equal(typeof got.timestamp, "number");

  // Sent in order over POSTs, receipts too.
  const inOrder = [];
  const three = new Promise((resolve) =>
    viaWs.on("message", (m) => m.fromClientId === "via-http-json" && inOrder.push(m.msg) === 3 && resolve()),
  );
  for (const n of ["1", "2", "3"]) viaJson.send({ toClientId: "via-ws", msg: n });
  await within(three);
  assert.deepEqual(inOrder, ["1", "2", "3"]);
  const receipt = next(viaHttp, "receipt");
  viaHttp.send({ toClientId: "nobody", msg: "anyone?", msgId: "h-1" });
  assert.equal((await receipt).status, 4);
  for (const c of [viaHttp, viaJson, viaWs]) c.close();
});

test("a WebSocket handshake that fails (a proxy that refuses upgrades) falls back to HTTP by itself", async () => {
  // A real WebSocket whose handshake a real server refuses (404), as a
  // proxy that blocks upgrades would.
  class Blocked extends WebSocket {
    constructor(u, protocols) {
      super(u.replace("/ws", "/blocked"), protocols);
    }
  }
  const c = client("fell-back", { WebSocket: Blocked });
  const events = [];
  c.on("close", (e) => events.push(e));
  await within(c.opened());
  assert.equal(c.transport, "http");
  assert.deepEqual(events, [], "a fallback is not a close the app sees");
  const echo = next(c, "receipt");
  c.send({ toClientId: "nobody", msg: "x" });
  assert.equal((await echo).status, 4);
  c.close();
});

test("transports are validated; an impossible list is refused", () => {
  assert.throws(() => new WsPoolClient(url, { id: "x", transports: ["carrier-pigeon"] }), /transports/);
  assert.throws(() => new WsPoolClient(url, { id: "x", transports: [] }), /transports/);
  assert.throws(
    () => new WsPoolClient(url, { id: "x", transports: ["websocket"], WebSocket: null }),
    /no usable transport/,
  );
});

test("tokens are built and validated as the server does", () => {
  assert.equal(token("alice", ["room1", "room2", "room1"]), "alice_room1_room2");
  assert.throws(() => token("", []), TypeError);
  assert.throws(() => token("a_b", []), /may only hold/);
  assert.throws(() => token("alice", ["bad room"]), /channel "bad room"/);
  assert.throws(
    () => new WsPoolClient("ws://127.0.0.1:1/ws", { id: "x", WebSocket: null, format: "xml" }),
    /format must be/,
  );
});
