/**
 * The browser page (web/, built by scripts/build-web.mjs) in headless Chromium: its logits for a
 * tqm and PNG images equal the Node IntegerEngine's (the page runs the wasm engine), bad input gives
 * a message on the page, and the console stays free of errors. Skipped when /usr/bin/chromium is absent.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { PNG } from 'pngjs';
import { IntegerEngine, encodeTqm } from '../src/index.js';
import { irCases, randomImages } from './ir-models.js';

const CHROMIUM = '/usr/bin/chromium';
const root = fileURLToPath(new URL('../../', import.meta.url));
const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.map': 'application/json' };

/** A PNG of CHW uint8 planes (3 channels). */
function png(planes: Uint8Array, height: number, width: number): Buffer {
  const image = new PNG({ width, height });
  const n = width * height;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) image.data[4 * i + c] = planes[c * n + i];
    image.data[4 * i + 3] = 255;
  }
  return PNG.sync.write(image);
}

test('the browser page predicts as the Node engine does, and reports bad input on the page', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent (scripts/setup-debian.sh --all installs it)`, timeout: 60_000 }, async () => {
  execFileSync(process.execPath, [join(root, 'scripts', 'build-web.mjs')], { stdio: 'pipe' });
  const web = join(root, 'dist', 'web');
  const server = createServer((req, res) => {
    const path = normalize(join(web, (req.url ?? '/').split('?')[0].replace(/\/$/, '/index.html')));
    if (!path.startsWith(web) || !existsSync(path)) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream' }).end(readFileSync(path));
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    await page.waitForSelector('body[data-ready]');

    const { model } = irCases(2).find((c) => c.name === 'residual-int16') ?? assert.fail('no residual-int16 case');
    const [, h, w] = new IntegerEngine(model).inputShape;
    const tqm = Buffer.from(encodeTqm(model));
    const engine = new IntegerEngine(model);
    const images = randomImages(model, 3, 5);
    const size = 3 * h * w;
    await page.setInputFiles('#model', { name: 'tiny.tqm', mimeType: 'application/octet-stream', buffer: tqm });
    await page.waitForSelector('#model-info:not([hidden])');
    assert.match(await page.textContent('#report') ?? '', /residual-int16.*\n[^]*total/);
    for (let k = 0; k < 3; k++) {
      const planes = images.subarray(k * size, (k + 1) * size);
      await page.setInputFiles('#image', { name: `img${k}.png`, mimeType: 'image/png', buffer: png(planes, h, w) });
      await page.waitForSelector('#result:not([hidden])');
      const logits = JSON.parse(await page.textContent('#logits') ?? 'null') as number[];
      assert.deepEqual(logits, Array.from(engine.infer(planes)), `image ${k}`);
      assert.equal((await page.$$('#top5 tbody tr')).length, 5);
      assert.equal(await page.getAttribute('#result', 'data-backend'), 'wasm', 'Chromium runs the WebAssembly kernels');
      assert.match(await page.textContent('#time') ?? '', /ms per inference \(wasm engine\)/);
    }
    mkdirSync(join(root, 'dist', 'test-artifacts'), { recursive: true });
    await page.screenshot({ path: join(root, 'dist', 'test-artifacts', 'browser-page.png'), fullPage: true });

    const bad = async (selector: string, file: { name: string; mimeType: string; buffer: Buffer }, pattern: RegExp): Promise<void> => {
      await page.setInputFiles(selector, file);
      await page.waitForSelector('#message:not([hidden])');
      assert.match(await page.textContent('#message') ?? '', pattern);
      assert.equal(await page.isHidden('#result'), true);
    };
    await bad('#image', { name: 'small.png', mimeType: 'image/png', buffer: png(new Uint8Array(3 * 4 * 5), 4, 5) }, /small\.png: the image is 5x4, the model takes 14x10/);
    await bad('#model', { name: 'not.tqm', mimeType: 'application/octet-stream', buffer: Buffer.from('hello, this is not a model but it is longer than a header') }, /^not\.tqm: not a valid tqm model: /);
    await bad('#model', { name: 'cut.tqm', mimeType: 'application/octet-stream', buffer: tqm.subarray(0, tqm.length >> 1) }, /^cut\.tqm: not a valid tqm model: .*truncated/);
    await bad('#image', { name: 'junk.png', mimeType: 'image/png', buffer: Buffer.from('not a png') }, /junk\.png: not an image/);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    server.close();
  }
});
