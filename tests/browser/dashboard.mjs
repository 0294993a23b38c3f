// End-to-end: the live dashboard of the chat example in headless Chromium
// at 1280x800, while two chat tabs connect and send: the charts and the
// client list update, and its buttons join a channel and kick a client.
// Writes a screenshot to $DASHBOARD_SCREENSHOT when set (docs/dashboard.png
// in the repository was made so). Run after `cargo build --example chat`.
import { chat, launch, tab, send, sees } from './lib.mjs';

const server = await chat();
const browser = await launch();
let failed = false;
try {
  const dash = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  dash.setDefaultTimeout(10_000);
  await dash.goto(server.base + '/dashboard');
  await dash.locator('#status', { hasText: 'live' }).waitFor();

  const alice = await tab(browser, server.base, 'alice', 'room1');
  const bob = await tab(browser, server.base, 'bob', 'room1');
  for (let i = 0; i < 5; i++) await send(alice, '', 'room1', `tick ${i}`);
  await sees(bob, 'alice (#room1): tick 4');

  // The tiles and charts follow the stream, one sample a second.
  await dash.locator('#connections', { hasText: '2' }).waitFor();
  await dash.waitForFunction(() => Number(document.getElementById('totalIn').textContent) >= 5);
  await dash.waitForFunction(() => Number(document.getElementById('connChart').dataset.points) >= 3);
  await dash.waitForFunction(() => Number(document.getElementById('rateChart').dataset.points) >= 3);
  // The client list, and its buttons.
  await dash.locator('#clients tr[data-id="alice"]').waitFor();
  await dash.locator('#clients tr[data-id="bob"]').waitFor();
  if (process.env.DASHBOARD_SCREENSHOT) {
    // For the picture: half a minute of traffic, more clients joining.
    const more = [];
    for (let i = 0; i < 30; i++) {
      if (i % 6 === 0) more.push(await tab(browser, server.base, `guest${i}`, i % 12 ? 'room1' : 'lobby'));
      for (let k = 0; k <= i % 7; k++) await send(alice, '', 'room1', `burst ${i}.${k}`);
      await dash.waitForTimeout(1000);
    }
    await dash.screenshot({ path: process.env.DASHBOARD_SCREENSHOT });
    for (const page of more) await page.close();
  }

  const aliceRow = dash.locator('#clients tr[data-id="alice"]');
  await aliceRow.locator('input').fill('lobby');
  await aliceRow.locator('button.join').click();
  await dash.locator('#clients tr[data-id="alice"] td', { hasText: 'room1, lobby' }).waitFor();

  await dash.locator('#clients tr[data-id="bob"] button.kick').click();
  await sees(bob, 'closed: 4002');
  await dash.locator('#connections', { hasText: '1' }).waitFor();
  await dash.waitForFunction(() => !document.querySelector('#clients tr[data-id="bob"]'));

  // The chat and the dashboard link to each other.
  await alice.locator('a[href="/dashboard"]').waitFor();
  await dash.locator('a[href="/"]').waitFor();
  console.log('browser dashboard: ok');
} catch (e) {
  failed = true;
  console.error('browser dashboard: FAILED', e);
} finally {
  await browser.close();
  server.child.kill('SIGINT');
}
process.exit(failed ? 1 : 0);
