// The Bun peer: Bun's built-in WebSocket server (uWebSockets underneath),
// written as Bun's users write it: rooms are Bun's native pub/sub
// (`ws.subscribe(room)`, `server.publish(room, payload)`), a direct
// message one `ws.send`. Protocol as node-ws's: connect to
// /?id=ID&room=ROOM; the server sends "ready"; text frames
// "R<room> <payload>" go to every member of the room, "D<id> <payload>"
// to one client, as "<payload>".
const port = Number(process.argv[2] || 3000);
const users = new Map();

const server = Bun.serve({
  hostname: '127.0.0.1',
  port,
  fetch(req, server) {
    const url = new URL(req.url);
    const data = { id: url.searchParams.get('id'), room: url.searchParams.get('room') };
    if (server.upgrade(req, { data })) return;
    return new Response('WebSocket only', { status: 400 });
  },
  websocket: {
    // As the other peers: no compression, no idle timeout (Bun's default
    // closes a connection idle for 120 s; idle_15k holds them longer).
    perMessageDeflate: false,
    idleTimeout: 0,
    open(ws) {
      users.set(ws.data.id, ws);
      if (ws.data.room) ws.subscribe(ws.data.room);
      ws.send('ready');
    },
    message(ws, message) {
      const text = typeof message === 'string' ? message : message.toString();
      const sp = text.indexOf(' ');
      if (sp < 1) return;
      const target = text.slice(1, sp);
      const payload = text.slice(sp + 1);
      if (text[0] === 'R') {
        server.publish(target, payload);
      } else {
        const c = users.get(target);
        if (c) c.send(payload);
      }
    },
    close(ws) {
      if (users.get(ws.data.id) === ws) users.delete(ws.data.id);
    },
  },
});
