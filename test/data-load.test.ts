import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CIFAR10_CLASSES, dataSearchDirs, loadDataset } from '../src/data/index.js';
import { cifarRecords, encodePng, gzip, idxFile, rgbImage, sharedDataDir, tarArchive, tempDir } from './fixtures/data/make.js';

/** A cifar-10-jpeg.tar.gz look-alike: one 32x32 PNG per class and split. */
function jpegArchive(classes: string[], size = 32): Buffer {
  const entries = ['train', 'test'].flatMap((split) =>
    classes.map((cls, i) => ({ name: `${split}/${cls}/0000.png`, data: encodePng(size, size, rgbImage(size, size, () => i * 10)) })),
  );
  return gzip(tarArchive(entries));
}

test('cifar10: binary batches are preferred for a split; the JPEG archive fills in the other split', async () => {
  const { dir, cleanup } = tempDir();
  try {
    mkdirSync(join(dir, 'cifar-10-batches-bin'));
    writeFileSync(join(dir, 'cifar-10-batches-bin', 'test_batch.bin.gz'), gzip(cifarRecords([[7]])));
    writeFileSync(join(dir, 'cifar-10-jpeg.tar.gz'), jpegArchive(CIFAR10_CLASSES));
    const env = { TINYQUANT_CACHE: join(dir, 'cache') };
    const testSplit = await loadDataset({ name: 'cifar10', split: 'test', dataDir: dir, env, decodeWorkers: 0 });
    assert.match(testSplit.source, /test_batch\.bin\.gz$/);
    assert.deepEqual(Array.from(testSplit.labels), [7]);
    const trainSplit = await loadDataset({ name: 'cifar10', split: 'train', dataDir: dir, env, decodeWorkers: 0 });
    assert.match(trainSplit.source, /cifar-10-jpeg\.tar\.gz$/);
    assert.equal(trainSplit.name, 'cifar10');
    assert.deepEqual(trainSplit.classes, CIFAR10_CLASSES);
    assert.deepEqual(Array.from(trainSplit.labels), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(trainSplit.images[3 * 3072], 30);
  } finally {
    cleanup();
  }
});

test('cifar10 JPEG fallback: class folders must match the official class list', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const renamed = CIFAR10_CLASSES.map((c) => (c === 'airplane' ? 'plane' : c));
    writeFileSync(join(dir, 'cifar-10-jpeg.tar.gz'), jpegArchive(renamed));
    await assert.rejects(
      loadDataset({ name: 'cifar10', split: 'train', dataDir: dir, env: { TINYQUANT_CACHE: join(dir, 'cache') }, decodeWorkers: 0 }),
      /cifar-10-jpeg\.tar\.gz: class folders \(automobile, .*plane, .*\) differ from the official CIFAR-10 classes in order \(airplane, /,
    );
  } finally {
    cleanup();
  }
});

test('cifar10 JPEG fallback: images must be 32x32 (all 16x16 or all 64x64 is refused naming a file)', async () => {
  const { dir, cleanup } = tempDir();
  try {
    for (const size of [16, 64]) {
      writeFileSync(join(dir, 'cifar-10-jpeg.tar.gz'), jpegArchive(CIFAR10_CLASSES, size));
      await assert.rejects(
        loadDataset({ name: 'cifar10', split: 'train', dataDir: dir, env: { TINYQUANT_CACHE: join(dir, 'cache') }, decodeWorkers: 0 }),
        new RegExp(`cifar-10-jpeg\\.tar\\.gz: \\w+/\\w+/0000\\.png is ${size}x${size} \\(height x width\\), the expected image size is 32x32, that of CIFAR-10; dataset imagefolder with imageSize and resize`),
        `${size}x${size}`,
      );
    }
  } finally {
    cleanup();
  }
});

test('search order: dataDir, then each TINYQUANT_DATA directory, then the cache; dataDir may be the dataset folder', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const [a, b, c] = ['a', 'b', 'c'].map((n) => join(dir, n));
    for (const [d, label] of [[b, 1], [c, 2]] as const) {
      mkdirSync(join(d, 'cifar-10-batches-bin'), { recursive: true });
      writeFileSync(join(d, 'cifar-10-batches-bin', 'test_batch.bin'), cifarRecords([[label]]));
    }
    const env = { TINYQUANT_DATA: `${a}:${b}`, TINYQUANT_CACHE: c };
    assert.deepEqual(dataSearchDirs(undefined, env), [a, b, c, '/usr/share/datasets']);
    const label = async (dataDir?: string) => (await loadDataset({ name: 'cifar10', split: 'test', dataDir, env })).labels[0];
    assert.equal(await label(), 1, 'TINYQUANT_DATA before the cache');
    assert.equal(await label(join(c, 'cifar-10-batches-bin')), 2, 'explicit dataDir first, pointing at the batch folder');
    assert.equal(await label(c), 2);
  } finally {
    cleanup();
  }
});

test('mnist from IDX files in a mnist/ folder; a lone images file is an error', async () => {
  const { dir, cleanup } = tempDir();
  try {
    mkdirSync(join(dir, 'mnist'));
    writeFileSync(join(dir, 'mnist', 't10k-images-idx3-ubyte.gz'), gzip(idxFile([3, 2, 2], new Uint8Array(12).fill(9))));
    const env = { TINYQUANT_DATA: dir, TINYQUANT_CACHE: join(dir, 'cache') };
    await assert.rejects(loadDataset({ name: 'mnist', split: 'test', env }), /mnist: has .*t10k-images-idx3-ubyte\.gz but not t10k-labels-idx1-ubyte/);
    writeFileSync(join(dir, 'mnist', 't10k-labels-idx1-ubyte'), idxFile([3], Uint8Array.from([0, 9, 5])));
    const d = await loadDataset({ name: 'mnist', split: 'test', env });
    assert.deepEqual([d.count, d.channels, d.height, d.width], [3, 1, 2, 2]);
    assert.deepEqual(Array.from(d.labels), [0, 9, 5]);
  } finally {
    cleanup();
  }
});

const FASHION = '/usr/share/datasets/fashion-mnist';

test('real Fashion-MNIST test split from the Debian package', { skip: !existsSync(FASHION) && `${FASHION} missing (apt-get install dataset-fashion-mnist)` }, async () => {
  const d = await loadDataset({ name: 'fashion-mnist', split: 'test', env: { TINYQUANT_CACHE: '/nonexistent' } });
  assert.deepEqual([d.count, d.channels, d.height, d.width], [10000, 1, 28, 28]);
  assert.equal(d.classes[d.labels[0]], 'Ankle boot'); // the first test image is an ankle boot
  const perClass = new Array(10).fill(0);
  d.labels.forEach((l) => perClass[l]++);
  assert.deepEqual(perClass, new Array(10).fill(1000));
});

const SHARED = sharedDataDir();

test('real CIFAR-10 and CIFAR-100 test splits through loadDataset', { skip: !SHARED && 'no shared/data on this machine (set TINYQUANT_SHARED_DATA)' }, async () => {
  assert.ok(SHARED);
  const env = { TINYQUANT_DATA: SHARED, TINYQUANT_CACHE: '/nonexistent' };
  const c10 = await loadDataset({ name: 'cifar10', split: 'test', env });
  assert.equal(c10.count, 10000);
  assert.equal(c10.classes[c10.labels[0]], 'cat');
  const c100 = await loadDataset({ name: 'cifar100', split: 'test', env });
  assert.equal(c100.count, 10000);
  assert.equal(c100.classes.length, 100);
  assert.equal(c100.coarseClasses?.length, 20);
  // The official CIFAR-100 test set starts with a mountain (superclass large natural outdoor scenes).
  assert.equal(c100.classes[c100.labels[0]], 'mountain');
  assert.equal(c100.coarseClasses?.[c100.coarseLabels?.[0] ?? -1], 'large_natural_outdoor_scenes');
});
