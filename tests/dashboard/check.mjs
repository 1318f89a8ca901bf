// Opens the aggregator's dashboard in Debian's headless Chromium, waits for
// the plot of an application to show real points, waits for it to update,
// and writes a screenshot. Prints one JSON line with what it saw.
//
//   node check.mjs URL SCREENSHOT.png
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, out] = process.argv.slice(2);
if (!url || !out) {
  console.error('usage: node check.mjs URL SCREENSHOT.png');
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), 'scaler-chromium-'));
const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// A fresh profile directory: launchPersistentContext is how playwright
// takes --user-data-dir.
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium', headless: true, args, viewport: { width: 1400, height: 1100 },
});
const result = {};
try {
  const page = ctx.pages()[0] || await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url, { waitUntil: 'load', timeout: 15000 });
  const plot = (id) => page.evaluate((id) => {
    const s = document.getElementById(id);
    return { points: Number(s.dataset.points || 0), last: Number(s.dataset.lastTime || 0),
             paths: s.querySelectorAll('path').length };
  }, id);
  await page.waitForFunction(() => Number(document.getElementById('plot-cpu').dataset.points || 0) >= 5, null,
    { timeout: 20000 });
  result.title = await page.textContent('#title');
  result.first = await plot('plot-cpu');
  result.energy = await plot('plot-energy');
  await page.waitForFunction((t) => Number(document.getElementById('plot-cpu').dataset.lastTime || 0) > t,
    result.first.last, { timeout: 15000 });
  result.later = await plot('plot-cpu');
  result.updates = Number(await page.evaluate(() => document.body.dataset.updates || 0));
  result.nav_apps = await page.$$eval('#apps li', (l) => l.length);
  result.event_rows = await page.$$eval('#events tbody tr', (l) => l.length);
  result.errors = errors;
  await page.screenshot({ path: out, fullPage: true });
  result.screenshot = out;
} finally {
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
