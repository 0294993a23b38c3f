// What the browser checks share: free ports, the chat example as a child
// process, headless Chromium, and the chat page driven like a user.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { once } from 'node:events';
import { chromium } from 'playwright-core';

const root = new URL('../../', import.meta.url).pathname;
const target = process.env.CARGO_TARGET_DIR || `${root}target`;

export const freePort = async () => {
  const srv = createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  return port;
};

// Resolves when `child` prints `text`; rejects if it exits first.
export const ready = (child, text) => new Promise((resolve, reject) => {
  let out = '';
  child.stdout.on('data', (d) => { out += d; if (out.includes(text)) resolve(); });
  child.on('exit', (code) => reject(new Error(`${child.spawnfile} exited with ${code}`)));
});

// The chat example on a free port, with `args`; resolves once it serves.
export const chat = async (args = []) => {
  const port = await freePort();
  const child = spawn(`${target}/debug/examples/chat`, ['--addr', `127.0.0.1:${port}`, ...args], {
    env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await ready(child, 'chat on http://');
  return { child, base: `http://127.0.0.1:${port}` };
};

// Headless Chromium with the flags this machine's closed network needs.
export const launch = () => chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

// A tab of the chat page at `base`, connected as `id` in `channels`;
// with `noWebSocket`, in a page whose `window.WebSocket` is gone (the
// client falls back to HTTP).
export const tab = async (browser, base, id, channels, { noWebSocket = false } = {}) => {
  const page = await browser.newPage();
  page.setDefaultTimeout(10_000);
  if (noWebSocket) await page.addInitScript(() => { delete window.WebSocket; });
  await page.goto(base + '/');
  await page.fill('#id', id);
  await page.fill('#channels', channels);
  await page.click('#connectBtn');
  await page.locator('#log', { hasText: `connected as ${id}_${channels}` }).waitFor();
  return page;
};

// Sends `text` from `page` to the id `to` and the channels `toChannels`.
export const send = async (page, to, toChannels, text) => {
  await page.fill('#to', to);
  await page.fill('#toChannels', toChannels);
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
};

// Waits until `page`'s log shows `text`.
export const sees = (page, text) => page.locator('#log div', { hasText: text }).first().waitFor();
