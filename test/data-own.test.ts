/**
 * Bringing your own images: sizes (checked or resized), colour models (checked or converted), a
 * seeded stratified held-out split, one class list over the splits, the config fields that carry
 * all this, and the download's fallback to a second mirror.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { type ImageDataset, type ImageFolderOptions, downloadFirstVerified, imageSize, loadDataset, loadImageFolder, resizeArea } from '../src/data/index.js';
import { expandGrid, parseGrid } from '../src/experiments/grid.js';
import { resolveConfig, resolveConfigPaths } from '../src/train/config.js';
import { configDatasetOptions } from '../src/train/dataset.js';
import { encodeGreyPng, encodePng, rgbImage, tempDir } from './fixtures/data/make.js';

/** Write `files` (path relative to `root` -> bytes) and return `root`. */
function writeFolder(root: string, files: Record<string, Uint8Array>): string {
  for (const [name, bytes] of Object.entries(files)) {
    mkdirSync(dirname(join(root, name)), { recursive: true });
    writeFileSync(join(root, name), bytes);
  }
  return root;
}

const solid = (w: number, h: number, rgb: [number, number, number]) => encodePng(w, h, rgbImage(w, h, (_x, _y, c) => rgb[c]));
const load = (path: string, options: Partial<ImageFolderOptions>) => loadImageFolder(path, { split: 'train', workers: 0, cache: false, ...options });

test('resizeArea: block means when shrinking, fractional coverage, replication when enlarging', () => {
  const square = Uint8Array.from([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160]);
  // 2x2 blocks of a 4x4 image: (10+20+50+60)/4 = 35, ...
  assert.deepEqual(Array.from(resizeArea(square, 1, 4, 4, 2, 2)), [35, 55, 115, 135]);
  // One row of 3 to 2: each output covers 1.5 inputs: (30 + 60/2) / 1.5 = 40, (60/2 + 90) / 1.5 = 80.
  assert.deepEqual(Array.from(resizeArea(Uint8Array.from([30, 60, 90]), 1, 1, 3, 1, 2)), [40, 80]);
  assert.deepEqual(Array.from(resizeArea(Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]), 2, 2, 2, 2, 4)), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8]);
});

test('image folder: images of another size are resized to imageSize when asked, rejected naming the file otherwise', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const big = rgbImage(4, 4, (x, y, c) => 10 * (y * 4 + x) + c);
    const root = writeFolder(join(dir, 'imgs'), { 'a/big.png': encodePng(4, 4, big), 'b/small.png': solid(2, 2, [1, 2, 3]) });
    const d = await load(root, { imageSize: [2, 2], resize: true });
    assert.deepEqual([d.count, d.channels, d.height, d.width], [2, 3, 2, 2]);
    // Red plane of big.png: 10 * index; its 2x2 block means are 25, 45, 105, 125.
    assert.deepEqual(Array.from(d.images.subarray(0, 4)), [25, 45, 105, 125]);
    assert.deepEqual(Array.from(d.images.subarray(12, 24)), [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3], 'the image of the right size is untouched');
    await assert.rejects(load(root, { imageSize: [2, 2] }), /imgs: a\/big\.png is 4x4 \(height x width\), the expected image size is 2x2; set resize/);
    await assert.rejects(load(root, {}), /imgs: b\/small\.png is 2x2 \(height x width\), but a\/big\.png is 4x4; all images of a dataset must have one size/);
    await assert.rejects(load(root, { resize: true }), /imgs: resizing needs the target imageSize/);
  } finally {
    cleanup();
  }
});

test('image folder: BT.601 grey from colour, replicated grey to RGB, the files\' own model by default, mixed models rejected', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const colour = writeFolder(join(dir, 'colour'), { 'r/0.png': solid(1, 1, [255, 0, 0]), 's/0.png': solid(1, 1, [0, 255, 0]), 't/0.png': solid(1, 1, [0, 0, 255]) });
    const grey = await load(colour, { channels: 1 });
    assert.equal(grey.channels, 1);
    assert.deepEqual(Array.from(grey.images), [76, 150, 29]); // 0.299, 0.587, 0.114 of 255, rounded
    const greyFolder = writeFolder(join(dir, 'grey'), { 'a/0.png': encodeGreyPng(2, 1, Uint8Array.from([7, 200])) });
    const own = await load(greyFolder, {});
    assert.deepEqual([own.channels, ...own.images], [1, 7, 200], 'a grey folder stays grey');
    const rgb = await load(greyFolder, { channels: 3 });
    assert.deepEqual([rgb.channels, ...rgb.images], [3, 7, 200, 7, 200, 7, 200]);
    const mixed = writeFolder(join(dir, 'mixed'), { 'a/0.png': encodeGreyPng(1, 1, Uint8Array.from([9])), 'b/0.png': solid(1, 1, [1, 2, 3]) });
    await assert.rejects(load(mixed, {}), /mixed: mixed colour models: a\/0\.png is greyscale, b\/0\.png is colour; set channels to 1 or 3/);
    assert.equal((await load(mixed, { channels: 1 })).count, 2);
  } finally {
    cleanup();
  }
});

test('image folder: no images is an error naming the folder; a test split lacking a class keeps the class indices, one with an extra class is refused', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const empty = writeFolder(join(dir, 'empty'), { 'a/readme.txt': Buffer.from('no images') });
    await assert.rejects(load(empty, {}), /empty: no JPEG or PNG images/);
    const root = writeFolder(join(dir, 'split'), {
      'train/ant/0.png': solid(1, 1, [1, 1, 1]),
      'train/bee/0.png': solid(1, 1, [2, 2, 2]),
      'train/cat/0.png': solid(1, 1, [3, 3, 3]),
      'test/ant/0.png': solid(1, 1, [4, 4, 4]),
      'test/cat/0.png': solid(1, 1, [5, 5, 5]),
    });
    const testSplit = await load(root, { split: 'test' });
    assert.deepEqual(testSplit.classes, ['ant', 'bee', 'cat']);
    assert.deepEqual(Array.from(testSplit.labels), [0, 2]);
    const trainSplit = await load(root, { split: 'train' });
    assert.deepEqual([trainSplit.classes, Array.from(trainSplit.labels)], [['ant', 'bee', 'cat'], [0, 1, 2]], 'the same indices in both splits');
    writeFolder(root, { 'test/dog/0.png': solid(1, 1, [6, 6, 6]) });
    for (const split of ['train', 'test'] as const) {
      await assert.rejects(load(root, { split }), /split: the test split has class folder\(s\) the training split lacks: test\/dog \(no train\/dog\)/, split);
    }
  } finally {
    cleanup();
  }
});

/** The images of a dataset as strings of their bytes (the fixture's images are all distinct). */
function imageKeys(d: ImageDataset): string[] {
  const size = imageSize(d);
  return Array.from({ length: d.count }, (_, i) => d.images.subarray(i * size, (i + 1) * size).join(','));
}

test('valSplit: a seeded, stratified, disjoint split of the training images, the same for the same seed', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const counts = { a: 10, b: 6, c: 3 };
    const files: Record<string, Uint8Array> = {};
    Object.entries(counts).forEach(([cls, n], k) => {
      for (let i = 0; i < n; i++) files[`${cls}/${i}.png`] = solid(1, 1, [k, i, 7]);
    });
    const root = writeFolder(join(dir, 'imgs'), files);
    const split = async (seed: number) => {
      const options = { name: 'imagefolder' as const, path: root, valSplit: 0.3, seed, decodeWorkers: 0, env: { TINYQUANT_CACHE: join(dir, 'cache') } };
      return { train: await loadDataset({ ...options, split: 'train' }), test: await loadDataset({ ...options, split: 'test' }) };
    };
    const { train, test: heldOut } = await split(1);
    const perClass = (d: ImageDataset) => [0, 1, 2].map((c) => d.labels.filter((l) => l === c).length);
    assert.deepEqual(perClass(heldOut), [3, 2, 1], 'round(0.3 n) of each class');
    assert.deepEqual(perClass(train), [7, 4, 2]);
    const all = new Set([...imageKeys(train), ...imageKeys(heldOut)]);
    assert.equal(all.size, 19, 'disjoint, and together every image');
    const again = await split(1);
    assert.deepEqual(imageKeys(again.test), imageKeys(heldOut));
    assert.notDeepEqual(imageKeys((await split(2)).test), imageKeys(heldOut), 'another seed holds out other images');
  } finally {
    cleanup();
  }
});

test('config: the data fields are checked naming the field; the normalization default follows the channels', () => {
  assert.throws(() => resolveConfig({ channels: 2 }), /config: channels must be 1 \(grey\) or 3 \(RGB\); got 2/);
  assert.throws(() => resolveConfig({ imageSize: [0, 3] }), /config: imageSize\[0\] \(height\) must be an integer in \[1, 65535\]; got 0/);
  assert.throws(() => resolveConfig({ imageSize: 32 }), /config: imageSize must be \[height, width\]; got 32/);
  assert.throws(() => resolveConfig({ valSplit: 1 }), /config: valSplit must be a fraction in \[0, 1\); got 1/);
  assert.throws(() => resolveConfig({ resize: true }), /config: resize needs imageSize/);
  assert.throws(() => resolveConfig({ dataPath: '' }), /config: dataPath must be a non-empty string/);
  assert.throws(() => configDatasetOptions(resolveConfig({ dataset: 'cifar10', channels: 1, dataPath: 'x' }), 'train'), /dataPath, channels: only dataset imagefolder reads these \(dataset is cifar10\)/);
  assert.equal(resolveConfig({ dataset: 'fashion-mnist' }).normalization, 'fashion-mnist');
  assert.equal(resolveConfig({ dataset: 'imagefolder', channels: 1 }).normalization, 'none');
  assert.equal(resolveConfig({ dataset: 'imagefolder' }).normalization, 'apot');
  assert.equal(resolveConfig({ dataset: 'imagefolder', channels: 1, normalization: 'mnist' }).normalization, 'mnist');
});

test('config: dataPath reaches the loader; relative paths of a config or grid file resolve against its directory', async () => {
  await assert.rejects(loadDataset({ name: 'imagefolder', split: 'train' }), /dataset 'imagefolder' needs its path \(dataPath, --data-path\)/);
  assert.deepEqual(resolveConfigPaths({ dataPath: 'imgs', dataDir: '../data', init: '/abs/w.safetensors', lr: 1 }, '/cfg'), {
    dataPath: '/cfg/imgs',
    dataDir: '/data',
    init: '/abs/w.safetensors',
    lr: 1,
  });
  const grid = parseGrid(
    { name: 'g', models: ['resnet8', 'resnet20'], datasets: ['imagefolder'], methods: ['float'], recipe: { dataPath: 'imgs', channels: 1 }, overrides: [{ when: { model: 'resnet20' }, set: { dataPath: 'other' } }] },
    'g.yaml',
    '/grids',
  );
  const runs = expandGrid(grid, { scale: 'full' }).runs;
  assert.deepEqual(runs.map((r) => [r.config.model, r.config.dataPath, r.config.channels]).sort(), [['resnet20', '/grids/other', 1], ['resnet8', '/grids/imgs', 1]]);
  assert.equal(configDatasetOptions(runs.find((r) => r.config.model === 'resnet8')!.config, 'test').path, '/grids/imgs');
});

test('download: a mirror answering 403 is skipped for the next; the file lands only when its md5 matches', async () => {
  const body = Buffer.from('idx bytes');
  const md5 = createHash('md5').update(body).digest('hex');
  const server = createServer((req, res) => {
    if (req.url?.startsWith('/forbidden/')) res.writeHead(403).end();
    else if (req.url?.startsWith('/corrupt/')) res.writeHead(200).end('other bytes');
    else if (req.url?.startsWith('/good/')) res.writeHead(200).end(body);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { dir, cleanup } = tempDir();
  try {
    const lines: string[] = [];
    const destination = join(dir, 'cache', 'mnist', 'f.gz');
    await downloadFirstVerified([`${base}/forbidden/f.gz`, `${base}/corrupt/f.gz`, `${base}/good/f.gz`], destination, md5, (m) => lines.push(m));
    assert.deepEqual(readFileSync(destination), body);
    assert.match(lines.join('\n'), /forbidden\/f\.gz failed: HTTP 403 Forbidden; trying the next source/);
    assert.match(lines.join('\n'), /corrupt\/f\.gz: checksum mismatch .*; trying the next source/);
    const nowhere = join(dir, 'cache', 'none.gz');
    await assert.rejects(
      downloadFirstVerified([`${base}/forbidden/f.gz`, `${base}/missing`], nowhere, md5),
      /every source failed: download of .*\/forbidden\/f\.gz failed: HTTP 403 Forbidden; download of .*\/missing failed: HTTP 404/,
    );
    assert.equal(existsSync(nowhere), false);
    assert.deepEqual(readdirSync(join(dir, 'cache')).sort(), ['mnist'], 'no temp files left');
  } finally {
    server.close();
    cleanup();
  }
});
