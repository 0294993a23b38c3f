// End-to-end: two chat nodes over one Redis form one chat, in headless
// Chromium. A tab on each node chats by channel and by id; the admin API
// of either node sees and reaches both clients. Run: `npm ci && node
// cluster.mjs` here, after `cargo build --example chat --features redis`,
// with redis-server on the PATH; CHROMIUM overrides /usr/bin/chromium.
import { spawn } from 'node:child_process';
import { chat, freePort, launch, ready, tab as open, send, sees } from './lib.mjs';

const redisPort = await freePort();
const redis = spawn('redis-server', ['--port', `${redisPort}`, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
  { stdio: ['ignore', 'pipe', 'inherit'] });
await ready(redis, 'Ready to accept connections');
const node = () => chat(['--redis', `redis://127.0.0.1:${redisPort}`]);
const one = await node();
const two = await node();
const browser = await launch();
let failed = false;
try {
  const tab = (base, id, channels) => open(browser, base, id, channels);

  const alice = await tab(one.base, 'alice', 'room1');
  const bob = await tab(two.base, 'bob', 'room1');

  await send(alice, '', 'room1', 'hello from node one');
  await sees(bob, 'alice (#room1): hello from node one');
  await sees(alice, 'alice (#room1): hello from node one');

  await send(bob, 'alice', '', 'hi alice, from node two');
  await sees(alice, 'bob (direct): hi alice, from node two');

  // Each page lists who is online through its own node's admin API.
  await alice.locator('#online li', { hasText: 'bob' }).waitFor();
  await bob.locator('#online li', { hasText: 'alice' }).waitFor();

  const res = await fetch(one.base + '/api/send', {
    method: 'POST', body: JSON.stringify({ toClientId: 'bob', msg: 'via node one' }),
  });
  if (res.status !== 200) throw new Error(`api/send answered ${res.status}`);
  await sees(bob, 'server (direct): via node one');

  await send(alice, 'nobody', '', 'anyone?');
  await sees(alice, '[pool] status 4');

  const kicked = await fetch(one.base + '/api/clients/bob', { method: 'DELETE' });
  if (kicked.status !== 200) throw new Error(`DELETE answered ${kicked.status}`);
  await sees(bob, 'closed: 4002');
  console.log('browser cluster chat: ok');
} catch (e) {
  failed = true;
  console.error('browser cluster chat: FAILED', e);
} finally {
  await browser.close();
  for (const child of [one.child, two.child, redis]) child.kill('SIGINT');
}
process.exit(failed ? 1 : 0);
