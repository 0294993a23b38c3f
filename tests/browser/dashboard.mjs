// End-to-end: the library's dashboard (wspool::admin, mounted by the chat
// example) in headless Chromium at 1280x800, on two chat nodes over one
// Redis. Node one's dashboard is open (for local use); node two's asks for
// a password (HTTP Basic). While a chat tab on each node connects and
// sends, node one's dashboard shows both nodes, both clients with their
// node, the cluster's totals and charts; its buttons join, leave and kick
// a client on the other node; a node SIGKILLed shows down. Writes a
// screenshot to $DASHBOARD_SCREENSHOT when set (docs/dashboard.png in the
// repository was made so). Run after `cargo build --example chat
// --features redis`, with redis-server on the PATH.
import { spawn } from 'node:child_process';
import { chat, freePort, launch, ready, tab, send, sees } from './lib.mjs';

const redisPort = await freePort();
const redis = spawn('redis-server', ['--port', `${redisPort}`, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
  { stdio: ['ignore', 'pipe', 'inherit'] });
await ready(redis, 'Ready to accept connections');
const cluster = ['--redis', `redis://127.0.0.1:${redisPort}`];
const one = await chat(cluster);
const two = await chat([...cluster, '--admin-password', 'hunter2']);
const browser = await launch();
let failed = false;
const row = (page, kind, key) => page.locator(`#${kind} tr[data-${kind === 'clients' ? 'id' : 'node'}="${key}"]`);
try {
  const dash = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  dash.setDefaultTimeout(10_000);
  await dash.goto(one.base + '/dashboard');
  await dash.locator('#status', { hasText: 'live' }).waitFor();
  await dash.locator('#nodes', { hasText: '2 / 2' }).waitFor();
  await dash.waitForFunction(() => document.querySelectorAll('#nodeRows tr .link.up').length === 2);

  const alice = await tab(browser, one.base, 'alice', 'room1');
  const bob = await tab(browser, two.base, 'bob', 'room1');
  for (let i = 0; i < 5; i++) await send(alice, '', 'room1', `tick ${i}`);
  await sees(bob, 'alice (#room1): tick 4');

  // The cluster's totals and charts follow the stream, one sample a second.
  await dash.locator('#connections', { hasText: '2' }).waitFor();
  await dash.waitForFunction(() => Number(document.getElementById('totalIn').textContent) >= 5);
  await dash.waitForFunction(() => Number(document.getElementById('connChart').dataset.points) >= 3);
  await dash.waitForFunction(() => Number(document.getElementById('rateChart').dataset.points) >= 3);
  // Each node's row: the answering one, and the other with a client each.
  const names = await dash.$$eval('#nodeRows tr', (rows) => rows.map((r) => r.dataset.node));
  if (names.length !== 2 || names[0] === names[1]) throw new Error(`node rows: ${names}`);
  const [nameOne, nameTwo] = names;
  await row(dash, 'nodeRows', nameOne).locator('.this').waitFor();
  await dash.waitForFunction((n) => document.querySelector(`#nodeRows tr[data-node="${n}"] .connections`)?.textContent === '1', nameTwo);
  // The clients of both nodes, each with its node.
  await row(dash, 'clients', 'alice').locator('.node', { hasText: nameOne }).waitFor();
  await row(dash, 'clients', 'bob').locator('.node', { hasText: nameTwo }).waitFor();

  // Node two's dashboard asks for its password; given, it shows the same
  // cluster.
  const refused = await fetch(two.base + '/dashboard');
  if (refused.status !== 401) throw new Error(`node two's dashboard without a password: ${refused.status}`);
  const admin = await browser.newContext({ httpCredentials: { username: 'admin', password: 'hunter2' } });
  const dashTwo = await admin.newPage();
  dashTwo.setDefaultTimeout(10_000);
  await dashTwo.goto(two.base + '/dashboard');
  await dashTwo.locator('#nodes', { hasText: '2 / 2' }).waitFor();
  await row(dashTwo, 'clients', 'alice').waitFor();
  await row(dashTwo, 'nodeRows', nameTwo).locator('.this').waitFor();

  if (process.env.DASHBOARD_SCREENSHOT) {
    // For the picture: half a minute of traffic, more clients on both nodes.
    const more = [];
    for (let i = 0; i < 30; i++) {
      if (i % 5 === 0) more.push(await tab(browser, i % 10 ? one.base : two.base, `guest${i}`, i % 15 ? 'room1' : 'lobby'));
      for (let k = 0; k <= i % 7; k++) await send(k % 2 ? bob : alice, '', 'room1', `burst ${i}.${k}`);
      await dash.waitForTimeout(1000);
    }
    await dash.screenshot({ path: process.env.DASHBOARD_SCREENSHOT });
    for (const page of more) await page.close();
  }

  // Join, leave and kick bob, on the other node, from node one's page.
  const bobRow = row(dash, 'clients', 'bob');
  await bobRow.locator('input').fill('lobby');
  await bobRow.locator('button.join').click();
  await row(dash, 'clients', 'bob').locator('.channels', { hasText: 'room1, lobby' }).waitFor();
  await row(dash, 'clients', 'bob').locator('input').fill('lobby');
  await row(dash, 'clients', 'bob').locator('button.leave').click();
  await dash.waitForFunction(() => document.querySelector('#clients tr[data-id="bob"] .channels')?.textContent === 'room1');
  await row(dash, 'clients', 'bob').locator('button.kick').click();
  await sees(bob, 'closed: 4002');
  await dash.locator('#connections', { hasText: /^1$/ }).waitFor();
  await dash.waitForFunction(() => !document.querySelector('#clients tr[data-id="bob"]'));

  // Node two dies: node one's page shows it down (its report stops;
  // down after 3 s, gone with its lease).
  two.child.kill('SIGKILL');
  await row(dash, 'nodeRows', nameTwo).locator('.link.down').waitFor();
  await dash.locator('#nodes', { hasText: '1 / 2' }).waitFor();

  // The chat links to the dashboard.
  await alice.locator('a[href="/dashboard"]').waitFor();
  console.log('browser dashboard (two nodes over Redis): ok');
} catch (e) {
  failed = true;
  console.error('browser dashboard: FAILED', e);
} finally {
  await browser.close();
  for (const child of [one.child, two.child, redis]) child.kill('SIGINT');
}
process.exit(failed ? 1 : 0);
