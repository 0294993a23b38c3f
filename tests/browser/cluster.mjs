// End-to-end: two chat nodes over one Redis form one chat, in headless
// Chromium. A tab on each node chats by channel and by id; the admin API
// of either node sees and reaches both clients. Run: `npm ci && node
// cluster.mjs` here, after `cargo build --example chat --features redis`,
// with redis-server on the PATH; CHROMIUM overrides /usr/bin/chromium.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { once } from 'node:events';
import { chromium } from 'playwright-core';

const root = new URL('../../', import.meta.url).pathname;
const target = process.env.CARGO_TARGET_DIR || `${root}target`;
const freePort = async () => {
  const srv = createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  return port;
};
// Resolves when `child` prints `text`; rejects if it exits first.
const ready = (child, text) => new Promise((resolve, reject) => {
  let out = '';
  child.stdout.on('data', (d) => { out += d; if (out.includes(text)) resolve(); });
  child.on('exit', (code) => reject(new Error(`${child.spawnfile} exited with ${code}`)));
});

const redisPort = await freePort();
const redis = spawn('redis-server', ['--port', `${redisPort}`, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
  { stdio: ['ignore', 'pipe', 'inherit'] });
await ready(redis, 'Ready to accept connections');

const node = async () => {
  const port = await freePort();
  const child = spawn(`${target}/debug/examples/chat`,
    ['--addr', `127.0.0.1:${port}`, '--redis', `redis://127.0.0.1:${redisPort}`], {
      env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
  await ready(child, 'chat on http://');
  return { child, base: `http://127.0.0.1:${port}` };
};
const one = await node();
const two = await node();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  const tab = async (base, id, channels) => {
    const page = await browser.newPage();
    page.setDefaultTimeout(10_000);
    await page.goto(base + '/');
    await page.fill('#id', id);
    await page.fill('#channels', channels);
    await page.click('#connectBtn');
    await page.locator('#log', { hasText: `connected as ${id}_${channels}` }).waitFor();
    return page;
  };
  const send = async (page, to, toChannels, text) => {
    await page.fill('#to', to);
    await page.fill('#toChannels', toChannels);
    await page.fill('#text', text);
    await page.press('#text', 'Enter');
  };
  const sees = (page, text) => page.locator('#log div', { hasText: text }).first().waitFor();

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
