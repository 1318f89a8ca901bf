// Edits through the aggregator's dashboard in Debian's headless Chromium:
// creates a user and two applications, sets an owner, adds a container,
// moves it to the other application, sets scaling bounds, an energy cap
// and a container's CPU bounds, each by the page's own forms. Writes a
// screenshot after each edit and prints one JSON line with what it saw.
//
//   node edit.mjs URL HOST/CONTAINER SHOTS_DIR
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, key, shots] = process.argv.slice(2);
if (!url || !key || !shots) {
  console.error('usage: node edit.mjs URL HOST/CONTAINER SHOTS_DIR');
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), 'scaler-chromium-'));
const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium', headless: true, args, viewport: { width: 1400, height: 1100 },
});
const result = { steps: [], errors: [] };
try {
  const page = ctx.pages()[0] || await ctx.newPage();
  page.on('pageerror', (e) => result.errors.push(String(e)));
  page.setDefaultTimeout(15000);
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForSelector('#new-user-go');
  let n = 0;
  // Clicks `button`, waits for the edit's answer and keeps a screenshot.
  const edit = async (name, button) => {
    const before = Number(await page.getAttribute('#edit-status', 'data-count'));
    await page.click(button);
    await page.waitForFunction((b) => Number(document.getElementById('edit-status').dataset.count) > b, before);
    const status = await page.textContent('#edit-status');
    const ok = (await page.getAttribute('#edit-status', 'class')) === 'ok';
    n += 1;
    await page.screenshot({ path: join(shots, `dashboard-edit-${n}.png`), fullPage: true });
    result.steps.push({ name, ok, status });
    if (!ok) throw new Error(`${name}: ${status}`);
  };
  const go = async (hash, selector) => {
    await page.evaluate((h) => { location.hash = h; }, hash);
    await page.waitForSelector(selector);
  };
  await page.fill('#new-user-name', 'ana');
  await page.fill('#new-user-cpu', '4');
  await page.fill('#new-user-energy', '60');
  await edit('create user', '#new-user-go');
  await page.fill('#new-app-name', 'shop');
  await edit('create app shop', '#new-app-go');
  await page.fill('#new-app-name', 'other');
  await edit('create app other', '#new-app-go');
  await go('#app/shop', '#add-go');
  await page.waitForSelector('#app-owner option[value="ana"]', { state: 'attached' });
  await page.selectOption('#app-owner', 'ana');
  await edit('set owner', '#app-owner-go');
  await page.waitForSelector(`#add-container option[value="${key}"]`, { state: 'attached' });
  await page.selectOption('#add-container', key);
  await page.fill('#add-weight', '2');
  await edit('add container', '#add-go');
  const row = `#members tr[data-container="${key}"]`;
  await page.waitForSelector(`${row} select.mv option[value="other"]`, { state: 'attached' });
  await page.selectOption(`${row} select.mv`, 'other');
  await edit('move container', `${row} button.mv-go`);
  await go('#app/other', `#members tr[data-container="${key}"]`);
  await page.fill('#sc-min', '0.3');
  await page.fill('#sc-max', '2');
  await edit('set scaling bounds', '#sc-go');
  await page.fill('#cap-w', '30');
  await edit('set energy cap', '#cap-go');
  const [host, ...rest] = key.split('/');
  await go(`#container/${host}/${rest.join('/')}`, '#b-go');
  await page.fill('#b-min', '0.2');
  await page.fill('#b-max', '1.5');
  await edit('set container bounds', '#b-go');
  await go('#user/ana', '#u-go');
  result.user_title = await page.textContent('#title');
  await page.screenshot({ path: join(shots, 'dashboard-edit-user.png'), fullPage: true });
} catch (e) {
  result.failed = String(e);
} finally {
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
