/**
 * Time to first prediction on the browser page: `node dist/bench/web-first-prediction.js FILE.tqm`
 * builds dist/web, opens it in headless Chromium with a 32x32 PNG already picked, then picks the
 * tqm and times until the prediction is on the page (model decode + engine setup + one inference).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { PNG } from 'pngjs';

const root = fileURLToPath(new URL('../../', import.meta.url));
const file = process.argv[2] ?? '/tmp/r20.tqm';
execFileSync(process.execPath, [join(root, 'scripts', 'build-web.mjs')], { stdio: 'pipe' });
const web = join(root, 'dist', 'web');
const types: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };
const server = createServer((req, res) => {
  const path = normalize(join(web, (req.url ?? '/').split('?')[0].replace(/\/$/, '/index.html')));
  try {
    res.writeHead(200, { 'content-type': types[extname(path)] ?? 'application/octet-stream' }).end(readFileSync(path));
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
const image = new PNG({ width: 32, height: 32 });
for (let i = 0; i < image.data.length; i++) image.data[i] = i % 4 === 3 ? 255 : (i * 37) % 256;
const tqm = readFileSync(file);
for (let run = 0; run < 5; run++) {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  await page.waitForSelector('body[data-ready]');
  await page.setInputFiles('#image', { name: 'image.png', mimeType: 'image/png', buffer: PNG.sync.write(image) });
  const start = performance.now();
  await page.setInputFiles('#model', { name: 'model.tqm', mimeType: 'application/octet-stream', buffer: tqm });
  await page.waitForSelector('#result:not([hidden])');
  const ms = performance.now() - start;
  const inference = Number(await page.getAttribute('#result', 'data-ms'));
  const message = await page.textContent('#message');
  const backend = await page.getAttribute('#result', 'data-backend');
  console.log(`run ${run}: first prediction ${ms.toFixed(0)} ms after picking ${file} (inference ${inference.toFixed(1)} ms, ${backend} engine)${message ? `; message: ${message}` : ''}`);
  await page.close();
}
await browser.close();
server.close();
