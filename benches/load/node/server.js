// The node-ws peer: a minimal room broadcast / direct message server on the
// `ws` package, as its users write it. Protocol: connect to /?id=ID&room=ROOM;
// the server sends "ready"; text frames "R<room> <payload>" go to every
// member of the room, "D<id> <payload>" to one client, as "<payload>".
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 3000);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, clientTracking: false });
const rooms = new Map();
const users = new Map();

wss.on('connection', (ws, req) => {
  const url = new URL(req.url, 'http://localhost');
  const id = url.searchParams.get('id');
  const room = url.searchParams.get('room');
  users.set(id, ws);
  if (room) {
    if (!rooms.has(room)) rooms.set(room, new Set());
    rooms.get(room).add(ws);
  }
  ws.on('message', (data) => {
    const text = data.toString();
    const sp = text.indexOf(' ');
    if (sp < 1) return;
    const target = text.slice(1, sp);
    const payload = text.slice(sp + 1);
    if (text[0] === 'R') {
      const members = rooms.get(target);
      if (members) for (const c of members) c.send(payload);
    } else {
      const c = users.get(target);
      if (c) c.send(payload);
    }
  });
  ws.on('close', () => {
    if (users.get(id) === ws) users.delete(id);
    if (room && rooms.has(room)) rooms.get(room).delete(ws);
  });
  ws.on('error', () => {});
  ws.send('ready');
});
