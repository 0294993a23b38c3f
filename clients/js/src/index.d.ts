// Types of wspool-client. The message type follows proto/wspool.proto in
// its proto3 JSON form: int64 as number, bytes as base64 string.

/** A `SendMsg` as a plain object (proto3 JSON field names). */
export interface SendMsg {
  cmd?: number;
  /** Milliseconds since the Unix epoch; a number in both formats. */
  timestamp?: number;
  /** The sender's id, stamped by the server (empty on the pool's receipts). */
  fromClientId?: string;
  toClientId?: string;
  /** base64 */
  cmdData?: string;
  msgId?: string;
  /** 3 to 7 are the pool's receipt statuses. */
  status?: number;
  callbackMsg?: string;
  cmdkey?: string;
  priority?: number;
  localId?: number;
  pageKey?: string;
  channel?: string[];
  pageId?: string;
  msg?: string;
  Desc?: string;
}

/** What `close` listeners get. */
export interface CloseInfo {
  code: number;
  reason: string;
  /** Whether the client will connect again (with backoff). */
  reconnecting: boolean;
}

/** A WebSocket constructor: the browser's, Node 22's global one, or the
 * `ws` package's. */
export type WebSocketLike = new (url: string, protocols?: string | string[]) => {
  binaryType: string;
  readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
};

export interface WsPoolClientOptions {
  /** This client's id (the first segment of the subprotocol token). */
  id: string;
  /** Channels to join at connect. */
  channels?: string[];
  /** "binary" (protobuf, the default) or "json" (adds ?format=json). */
  format?: "binary" | "json";
  /** Reconnect after a close that is not final (default true). */
  reconnect?: boolean;
  /** First reconnect delay ceiling in ms (default 500). */
  minDelay?: number;
  /** Largest reconnect delay ceiling in ms (default 30,000). */
  maxDelay?: number;
  /** Messages queued while disconnected before `send` throws (default 1,000). */
  maxQueued?: number;
  /** The transports to try, in order (default ["websocket", "http"]):
   * when one is missing from the runtime, or never opens (a proxy that
   * refuses upgrades), the next is tried at once; once one opens,
   * reconnects keep to it. "http" is the server's fallback: server-sent
   * events down, POSTs up (PROTOCOL.md section 10). */
  transports?: Transport[];
  /** A WebSocket implementation (default: globalThis.WebSocket; `null`:
   * none, as in a runtime without one). */
  WebSocket?: WebSocketLike | null;
  /** The fetch the "http" transport uses (default: globalThis.fetch). */
  fetch?: typeof fetch;
}

/** A way to reach the server. */
export type Transport = "websocket" | "http";

export interface Events {
  open: () => void;
  message: (msg: SendMsg) => void;
  receipt: (msg: SendMsg) => void;
  close: (info: CloseInfo) => void;
  error: (err: Error) => void;
}

/** Close codes after which the client does not reconnect. */
export const FINAL_CLOSE_CODES: readonly number[];

/** The subprotocol token `id_channel1_channel2`, validated; throws a
 * TypeError naming the bad part. */
export function token(id: string, channels?: string[]): string;

export class WsPoolClient {
  constructor(url: string, options: WsPoolClientOptions);
  readonly id: string;
  /** The transport in use, or being tried. */
  readonly transport: Transport;
  readonly isOpen: boolean;
  readonly queued: number;
  on<E extends keyof Events>(event: E, listener: Events[E]): () => void;
  opened(): Promise<void>;
  send(msg: SendMsg): void;
  close(): void;
}

/** The "http" transport with a WebSocket's shape (used by WsPoolClient;
 * exported for tests and custom clients). */
export class HttpTransport {
  constructor(url: string, token: string, options?: { format?: "binary" | "json"; fetch?: typeof fetch });
  binaryType: string;
  readyState: number;
  send(data: string | Uint8Array): void;
  close(): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
