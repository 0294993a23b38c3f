// End-to-end: the chat example in headless Chromium. Two tabs connect,
// chat on a channel and directly, see each other online, and receive a
// message sent with the admin API. Run: `npm ci && node chat.mjs` here,
// after `cargo build --example chat`; CHROMIUM overrides /usr/bin/chromium.
import { chat, launch, tab as open, send, sees } from './lib.mjs';

const server = await chat();
const base = server.base;
const browser = await launch();
let failed = false;
try {
  const tab = (id, channels) => open(browser, base, id, channels);

  const alice = await tab('alice', 'room1');
  const bob = await tab('bob', 'room1');

  await send(alice, '', 'room1', 'hello room');
  await sees(bob, 'alice (#room1): hello room');
  await sees(alice, 'alice (#room1): hello room');

  await send(bob, 'alice', '', 'hi alice');
  await sees(alice, 'bob (direct): hi alice');

  await alice.locator('#online li', { hasText: 'bob' }).waitFor();

  const res = await fetch(base + '/api/send', {
    method: 'POST', body: JSON.stringify({ toClientId: 'bob', msg: 'from curl' }),
  });
  if (res.status !== 200) throw new Error(`api/send answered ${res.status}`);
  await sees(bob, 'server (direct): from curl');

  await send(alice, 'nobody', '', 'anyone?');
  await sees(alice, '[pool] status 4');
  console.log('browser chat: ok');
} catch (e) {
  failed = true;
  console.error('browser chat: FAILED', e);
} finally {
  await browser.close();
  server.child.kill('SIGINT');
}
process.exit(failed ? 1 : 0);
