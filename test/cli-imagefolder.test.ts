/**
 * `tinyquant train` on an image folder named by --data-path (or by a config file's relative
 * dataPath), with a held-out split, then `tinyquant eval` of its checkpoint on the same images.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeJpeg, encodePng, rgbImage, tempDir } from './fixtures/data/make.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function cli(args: string[], cache: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, TINYQUANT_THREADS: '1', TINYQUANT_CACHE: cache } });
  let [stdout, stderr] = ['', ''];
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** 12 images of each of two classes ('bright', 'dark'); every fourth one 32x32 instead of 16x16, the JPEGs colour. */
function writeImages(root: string): void {
  for (const [k, cls] of ['bright', 'dark'].entries()) {
    mkdirSync(join(root, cls), { recursive: true });
    for (let i = 0; i < 12; i++) {
      const size = i % 4 === 0 ? 32 : 16;
      const rgb = rgbImage(size, size, (x, y, c) => (k === 0 ? 170 : 30) + ((x * 7 + y * 3 + i * 11 + c * 5) % 40));
      writeFileSync(join(root, cls, `${i}.${i % 2 ? 'jpg' : 'png'}`), i % 2 ? encodeJpeg(size, size, rgb) : encodePng(size, size, rgb));
    }
  }
}

test('train --dataset imagefolder --data-path DIR (grey, resized, held-out split), then eval of its checkpoint', async () => {
  const { dir, cleanup } = tempDir('tq-cli-imagefolder-');
  try {
    const images = join(dir, 'imgs');
    writeImages(images);
    const cache = join(dir, 'cache');
    const common = ['--model', 'resnet8', '--epochs', '1', '--batch', '8', '--lr', '0.05', '--quiet'];
    const refused = join(dir, 'refused');
    const mixed = await cli(['train', ...common, '--dataset', 'imagefolder', '--data-path', images, '--out', refused], cache);
    assert.notEqual(mixed.code, 0);
    assert.match(mixed.stderr, /imgs: bright\/1\.jpg is 16x16 \(height x width\), but bright\/0\.png is 32x32; all images of a dataset must have one size/);
    assert.equal(existsSync(refused), false, 'nothing written before the images are checked');

    const out = join(dir, 'run');
    const flags = ['--data-path', images, '--channels', '1', '--image-size', '16x16', '--resize', '--val-split', '0.25'];
    const trained = await cli(['train', ...common, '--dataset', 'imagefolder', ...flags, '--out', out], cache);
    assert.equal(trained.code, 0, trained.stderr);
    const summary = JSON.parse(trained.stdout.trim().split('\n').at(-1)!);
    assert.equal(summary.out, out);
    const saved = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    assert.deepEqual([saved.dataPath, saved.channels, saved.imageSize, saved.resize, saved.valSplit, saved.normalization], [images, 1, [16, 16], true, 0.25, 'none']);

    const evaluated = await cli(['eval', '--checkpoint', join(out, 'last.json'), '--json'], cache);
    assert.equal(evaluated.code, 0, evaluated.stderr);
    const result = JSON.parse(evaluated.stdout);
    assert.equal(result.n, 6, '3 held-out images of each class');
    assert.equal(result.top1, summary.top1, 'eval measures the images the run was tested on');

    // The same run from a config file whose dataPath is relative to the file.
    writeFileSync(join(dir, 'run.yaml'), 'dataset: imagefolder\ndataPath: imgs\nchannels: 1\nimageSize: [16, 16]\nresize: true\nvalSplit: 0.25\n');
    const fromFile = join(dir, 'from-file');
    const again = await cli(['train', '--config', join(dir, 'run.yaml'), ...common, '--out', fromFile], cache);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout.trim().split('\n').at(-1)!).top1, summary.top1, 'the same data, the same run');
  } finally {
    cleanup();
  }
});
