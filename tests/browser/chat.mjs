// End-to-end: the chat example in headless Chromium. Two tabs connect,
// chat on a channel and directly, see each other online, and receive a
// message sent with the admin API. Run: `npm ci && node chat.mjs` here,
// after `cargo build --example chat`; CHROMIUM overrides /usr/bin/chromium.
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

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const server = spawn(`${target}/debug/examples/chat`, ['--addr', `127.0.0.1:${port}`], {
  env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' },
  stdio: ['ignore', 'pipe', 'inherit'],
});
// Ready when it logs its address.
await new Promise((resolve, reject) => {
  let out = '';
  server.stdout.on('data', (d) => { out += d; if (out.includes('chat on http://')) resolve(); });
  server.on('exit', (code) => reject(new Error(`chat exited with ${code}`)));
});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  const tab = async (id, channels) => {
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
  server.kill('SIGINT');
}
process.exit(failed ? 1 : 0);
