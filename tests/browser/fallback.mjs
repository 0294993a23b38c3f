// The HTTP fallback in headless Chromium: a tab whose `window.WebSocket`
// is removed chats (through the JS client's "http" transport: server-sent
// events and POSTs) with a tab on a WebSocket, by channel and directly,
// and gets the pool's receipts. Run: `npm ci && node fallback.mjs` here,
// after `cargo build --example chat`.
import { chat, launch, tab, send, sees } from './lib.mjs';

const server = await chat();
const browser = await launch();
let failed = false;
try {
  const plain = await tab(browser, server.base, 'plain', 'room1');
  const blocked = await tab(browser, server.base, 'blocked', 'room1', { noWebSocket: true });
  const hasWs = await blocked.evaluate(() => typeof window.WebSocket);
  if (hasWs !== 'undefined') throw new Error(`WebSocket still there: ${hasWs}`);

  await send(blocked, '', 'room1', 'over http');
  await sees(plain, 'blocked (#room1): over http');
  await sees(blocked, 'blocked (#room1): over http');

  await send(plain, 'blocked', '', 'over websocket');
  await sees(blocked, 'plain (direct): over websocket');

  await send(blocked, 'nobody', '', 'anyone?');
  await sees(blocked, '[pool] status 4');
  console.log('browser fallback: ok');
} catch (e) {
  failed = true;
  console.error('browser fallback: FAILED', e);
} finally {
  await browser.close();
  server.child.kill('SIGINT');
}
process.exit(failed ? 1 : 0);
