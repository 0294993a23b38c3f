// A TypeScript consumer of the packed package: `check.sh` installs the
// tarball `npm pack` makes into an empty project and type-checks this file
// there, so the package's `exports` and `types` are what resolve.
import { FINAL_CLOSE_CODES, token, WsPoolClient } from "wspool-client";
import type { CloseInfo, SendMsg, Transport, WsPoolClientOptions } from "wspool-client";

const options: WsPoolClientOptions = {
  id: "alice",
  channels: ["room1"],
  format: "json",
  transports: ["websocket", "http"],
  maxQueued: 100,
};
const client = new WsPoolClient("ws://127.0.0.1:3000/ws", options);
const off: () => void = client.on("message", (msg: SendMsg) => {
  const from: string | undefined = msg.fromClientId;
  console.log(from, msg.msg);
});
client.on("receipt", (r) => console.log(r.status, r.callbackMsg));
client.on("close", (info: CloseInfo) => console.log(info.code, info.reconnecting));
const transport: Transport = client.transport;
const ready: Promise<void> = client.opened();
client.send({ channel: ["room1"], msg: "hi" });
const final: readonly number[] = FINAL_CLOSE_CODES;
const t: string = token("alice", ["room1"]);
off();
client.close();
void [transport, ready, final, t];

// @ts-expect-error: an id is required.
new WsPoolClient("ws://127.0.0.1:3000/ws", { channels: ["room1"] });
// @ts-expect-error: only the two formats.
new WsPoolClient("ws://127.0.0.1:3000/ws", { id: "a", format: "xml" });
// @ts-expect-error: no such event.
client.on("nope", () => {});
