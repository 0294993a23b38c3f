// wspool-client: the JavaScript client of a wspool server (PROTOCOL.md in
// the wspool repository is the wire contract). See README.md.
import { wspool } from "./proto.js";

const SendMsg = wspool.SendMsg;

/** Close codes after which the client does not reconnect: the server (or
 * this client) meant the end, or reconnecting would fail the same way. */
export const FINAL_CLOSE_CODES = Object.freeze([
  1000, // normal: close() was called
  1002, // protocol error
  1003, // unsupported data
  1007, // invalid payload
  1008, // policy: rate limited, or the id is taken and the server refuses duplicates
  1009, // message too big
  1010, // extension required
  4001, // replaced: another connection (another tab) took the id
  4002, // disconnected by the server application
]);

const TCHAR = /^[!#$%&'*+\-.^`|~0-9A-Za-z]+$/;

/** The subprotocol token `id_channel1_channel2`, validated as the server
 * validates it (RFC 7230 token characters; `_` separates). */
export function token(id, channels = []) {
  for (const [what, name] of [["id", id], ...channels.map((c) => ["channel", c])]) {
    if (typeof name !== "string" || name.length === 0) {
      throw new TypeError(`wspool: the ${what} must be a non-empty string`);
    }
    if (!TCHAR.test(name)) {
      throw new TypeError(
        `wspool: ${what} ${JSON.stringify(name)} may only hold letters, digits and !#$%&'*+-.^\`|~ ("_" separates the id from the channels)`,
      );
    }
  }
  return [id, ...new Set(channels)].join("_");
}

/** Reconnect delays: min(maxDelay, minDelay * 2^attempt), then a random
 * half of it to a whole (jitter), so many clients do not come back at
 * once. */
function backoff(attempt, minDelay, maxDelay) {
  const ceiling = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** A message as a plain object with proto3 JSON field names: int64
 * (`timestamp`) as a number, bytes (`cmdData`) as base64, unset fields
 * left out, in both formats. */
function normalize(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null) continue;
    if (k === "timestamp") out[k] = Number(v);
    else out[k] = v;
  }
  return out;
}

function decodeBinary(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  return normalize(SendMsg.toObject(SendMsg.decode(bytes), { longs: Number, bytes: String }));
}

function encodeBinary(msg) {
  return SendMsg.encode(SendMsg.fromObject(msg)).finish();
}

function base64ToBytes(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * The HTTP fallback (PROTOCOL.md section 10) with a WebSocket's shape, so
 * the client drives either the same way: server-sent events read from a
 * streamed `fetch` (browsers and Node alike; `EventSource` can set no
 * headers and is missing on Node), one POST per message, in order, and
 * an empty POST every `ping_ms` as the keepalive.
 */
export class HttpTransport {
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  binaryType = "arraybuffer";
  readyState = 0;
  #base;
  #format;
  #fetch;
  #abort = new AbortController();
  #session = null;
  #keepalive = null;
  #posting = Promise.resolve();

  constructor(url, token, { format = "binary", fetch: fetchImpl = globalThis.fetch } = {}) {
    const u = new URL(url);
    u.protocol = u.protocol === "wss:" ? "https:" : u.protocol === "ws:" ? "http:" : u.protocol;
    this.#base = new URL(u.toString());
    this.#format = format;
    // Called on the global: a browser's fetch refuses any other `this`.
    this.#fetch = (...args) => fetchImpl.call(globalThis, ...args);
    u.searchParams.set("transport", "sse");
    u.searchParams.set("token", token);
    this.#read(u.toString());
  }

  async #read(url) {
    let res;
    try {
      res = await this.#fetch(url, {
        headers: { Accept: "text/event-stream" },
        signal: this.#abort.signal,
        cache: "no-store",
      });
    } catch {
      return this.#end(1006, "");
    }
    if (!res.ok || !res.body) {
      // Refused as a handshake would be: the close carries no code.
      return this.#end(1006, `HTTP ${res.status}`);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += decoder.decode(value, { stream: true });
        let end;
        while ((end = pending.indexOf("\n\n")) >= 0) {
          const block = pending.slice(0, end);
          pending = pending.slice(end + 2);
          if (this.#event(block)) return;
        }
      }
    } catch {
      // Aborted by close(), or the connection broke.
    }
    this.#end(1006, "");
  }

  /** One event; true when it ended the session. */
  #event(block) {
    let name = "message";
    let data = null;
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) name = line.slice(7);
      else if (line.startsWith("data: ")) data = line.slice(6);
    }
    if (data === null) return false; // a comment: the server's ping
    if (name === "open") {
      const open = JSON.parse(data);
      this.#session = open.session;
      this.readyState = 1;
      this.#keepalive = setInterval(() => this.#post(null), Math.max(1000, open.ping_ms ?? 25_000));
      this.onopen?.({});
    } else if (name === "close") {
      const { code, reason } = JSON.parse(data);
      this.#end(code, reason);
      return true;
    } else if (this.readyState === 1) {
      const payload = this.#format === "json" ? data : base64ToBytes(data).buffer;
      this.onmessage?.({ data: payload });
    }
    return false;
  }

  #end(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    clearInterval(this.#keepalive);
    this.#abort.abort();
    this.onclose?.({ code, reason });
  }

  /** POSTs `frame` (or the keepalive, `null`) after every earlier one. */
  #post(frame) {
    const url = new URL(this.#base);
    url.searchParams.set("session", this.#session);
    const json = this.#format === "json";
    const headers = { "Content-Type": json ? "application/json" : "application/x-protobuf" };
    const body = frame ?? "";
    const once = () => this.#fetch(url.toString(), { method: "POST", headers, body });
    this.#posting = this.#posting.then(async () => {
      if (this.readyState !== 1) return;
      try {
        let res = await once();
        // Too many waiting: a moment, then again, still in order.
        for (let i = 0; res.status === 429 && i < 5; i++) {
          await new Promise((r) => setTimeout(r, 200 * 2 ** i));
          res = await once();
        }
        if (res.status === 404) this.#end(1006, "session gone");
        else if (!res.ok) this.onerror?.(new Error(`wspool: POST answered ${res.status}`));
      } catch {
        this.#end(1006, "");
      }
    });
  }

  send(frame) {
    if (this.readyState !== 1) throw new Error("wspool: not open");
    this.#post(frame);
  }

  close() {
    this.#end(1000, "");
  }
}

const TRANSPORTS = ["websocket", "http"];

/**
 * A connection to a wspool server, reconnecting with backoff. See
 * README.md for the whole API and its semantics.
 */
export class WsPoolClient {
  #url;
  #opts;
  #ws = null;
  #listeners = new Map();
  #queue = [];
  #attempt = 0;
  #timer = null;
  #closed = false;
  #waiting = [];
  /** Index into the usable transports: the one in use or being tried. */
  #transport = 0;
  /** Transports that failed before opening, in a row. */
  #failed = 0;

  constructor(url, options = {}) {
    const {
      id,
      channels = [],
      format = "binary",
      reconnect = true,
      minDelay = 500,
      maxDelay = 30_000,
      maxQueued = 1000,
      transports = TRANSPORTS,
      WebSocket: Impl = globalThis.WebSocket,
      fetch: fetchImpl = globalThis.fetch,
    } = options;
    if (format !== "binary" && format !== "json") {
      throw new TypeError(`wspool: format must be "binary" or "json", not ${JSON.stringify(format)}`);
    }
    if (!Array.isArray(transports) || transports.length === 0 || transports.some((t) => !TRANSPORTS.includes(t))) {
      throw new TypeError(`wspool: transports must list some of ${JSON.stringify(TRANSPORTS)}`);
    }
    // What this runtime can use, in the caller's order.
    const usable = transports.filter((t) =>
      t === "websocket" ? typeof Impl === "function" : typeof fetchImpl === "function",
    );
    if (usable.length === 0) {
      throw new TypeError(
        "wspool: no usable transport: pass a WebSocket implementation as options.WebSocket (e.g. the `ws` package on Node < 22), or allow \"http\" where fetch exists",
      );
    }
    const u = new URL(url);
    if (format === "json") u.searchParams.set("format", "json");
    this.#url = u.toString();
    this.#opts = {
      token: token(id, channels),
      format,
      reconnect,
      minDelay,
      maxDelay,
      maxQueued,
      Impl,
      fetchImpl,
      transports: usable,
    };
    this.id = id;
    this.#connect();
  }

  /** The transport in use or being tried: "websocket" or "http". */
  get transport() {
    return this.#opts.transports[this.#transport];
  }

  /** Whether the socket is open now. */
  get isOpen() {
    return this.#ws !== null && this.#ws.readyState === 1;
  }

  /** Messages waiting for the connection (at most `maxQueued`). */
  get queued() {
    return this.#queue.length;
  }

  /** Listens to `event` ("open", "message", "receipt", "close", "error");
   * returns a function that stops listening. */
  on(event, fn) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(fn);
    return () => this.#listeners.get(event)?.delete(fn);
  }

  /** Resolves when the connection is open (at once if it is); rejects
   * after close(). */
  opened() {
    if (this.#closed) return Promise.reject(new Error("wspool: the client is closed"));
    if (this.isOpen) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  /** Sends a message (a plain object with proto3 JSON field names). While
   * the connection is down it is queued, up to `maxQueued`, and sent in
   * order on reconnect; past that, or after close(), this throws. */
  send(msg) {
    if (this.#closed) throw new Error("wspool: the client is closed");
    const frame = this.#opts.format === "json" ? JSON.stringify(msg) : encodeBinary(msg);
    if (this.isOpen) {
      this.#ws.send(frame);
      return;
    }
    if (this.#queue.length >= this.#opts.maxQueued) {
      throw new Error(`wspool: not connected and ${this.#opts.maxQueued} messages already queued`);
    }
    this.#queue.push(frame);
  }

  /** Closes for good: code 1000, no reconnect; fires "close" with
   * `reconnecting: false` and rejects pending opened(). */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onclose = ws.onerror = ws.onmessage = ws.onopen = null;
      try {
        ws.close(1000);
      } catch {
        // Closing a socket that never opened: nothing to tell the server.
      }
    }
    this.#queue.length = 0;
    for (const w of this.#waiting.splice(0)) w.reject(new Error("wspool: the client is closed"));
    this.#emit("close", { code: 1000, reason: "", reconnecting: false });
  }

  #emit(event, value) {
    for (const fn of this.#listeners.get(event) ?? []) {
      try {
        fn(value);
      } catch (e) {
        // A listener's exception must not break the connection.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  #connect() {
    const { Impl, fetchImpl, format, token: tok } = this.#opts;
    const ws =
      this.transport === "websocket"
        ? new Impl(this.#url, tok)
        : new HttpTransport(this.#url, tok, { format, fetch: fetchImpl });
    let opened = false;
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    ws.onopen = () => {
      opened = true;
      this.#attempt = 0;
      this.#failed = 0;
      for (const frame of this.#queue.splice(0)) ws.send(frame);
      for (const w of this.#waiting.splice(0)) w.resolve();
      this.#emit("open");
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg =
          typeof ev.data === "string" ? normalize(JSON.parse(ev.data)) : decodeBinary(ev.data);
      } catch (e) {
        this.#emit("error", new Error(`wspool: undecodable frame from the server: ${e.message}`));
        return;
      }
      // The pool's own receipts come with a status and no sender.
      const receipt = (msg.status ?? 0) !== 0 && !msg.fromClientId;
      this.#emit(receipt ? "receipt" : "message", msg);
    };
    ws.onerror = () => this.#emit("error", new Error("wspool: connection error"));
    ws.onclose = (ev) => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      const code = ev.code ?? 1006;
      const transports = this.#opts.transports.length;
      if (!opened && this.#opts.reconnect && this.#failed + 1 < transports) {
        // Never opened (refused, blocked by a proxy): the next transport,
        // at once. Once one opens, reconnects keep to it.
        this.#failed++;
        this.#transport = (this.#transport + 1) % transports;
        this.#connect();
        return;
      }
      if (!opened) {
        this.#failed = 0;
        this.#transport = (this.#transport + 1) % transports;
      }
      const reconnecting = this.#opts.reconnect && !FINAL_CLOSE_CODES.includes(code);
      this.#emit("close", { code, reason: ev.reason ?? "", reconnecting });
      if (!reconnecting) {
        this.#closed = true;
        for (const w of this.#waiting.splice(0)) w.reject(new Error(`wspool: closed with ${code}`));
        return;
      }
      const delay = backoff(this.#attempt++, this.#opts.minDelay, this.#opts.maxDelay);
      this.#timer = setTimeout(() => this.#connect(), delay);
    };
  }
}
