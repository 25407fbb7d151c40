import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Rng } from '../src/util/rng.js';
import {
  allocShared,
  CIFAR_AUGMENT,
  createEvalLoader,
  DataLoader,
  resolveNormalization,
  sampleAugmentation,
  type Batch,
  type ImageDataset,
  type LoaderOptions,
} from '../src/data/index.js';
import { normalizationTable, transformImage } from '../src/data/augment.js';
import { WorkerPool } from '../src/data/worker-pool.js';

const SHAPE = { channels: 3, height: 8, width: 8 };
const SIZE = 3 * 8 * 8;

function syntheticDataset(count: number, shared = true): ImageDataset {
  const rng = new Rng(99);
  const images = shared ? allocShared(count * SIZE) : new Uint8Array(count * SIZE);
  for (let i = 0; i < images.length; i++) images[i] = rng.int(256);
  return {
    name: 'synthetic',
    split: 'train',
    images,
    labels: Int32Array.from({ length: count }, (_, i) => i % 5),
    count,
    ...SHAPE,
    classes: ['a', 'b', 'c', 'd', 'e'],
    source: 'test',
  };
}

async function collect(loader: DataLoader, epoch: number, startStep = 0): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const batch of loader.epoch(epoch, startStep)) out.push(batch);
  return out;
}

async function withLoader<T>(dataset: ImageDataset, options: LoaderOptions, use: (l: DataLoader) => Promise<T>): Promise<T> {
  const loader = new DataLoader(dataset, options);
  try {
    return await use(loader);
  } finally {
    await loader.close();
  }
}

const train: LoaderOptions = { batchSize: 16, seed: 5, augment: CIFAR_AUGMENT, normalization: 'apot' };

function comparable(batches: Batch[]) {
  return batches.map((b) => ({ images: b.images, labels: b.labels, indices: b.indices, index: b.index, epoch: b.epoch }));
}

test('same seed gives the same batches whatever the worker count; epochs differ in order', async () => {
  const dataset = syntheticDataset(50);
  const runs = [];
  for (const workers of [0, 1, 2]) {
    runs.push(await withLoader(dataset, { ...train, workers, prefetch: 3 }, async (l) => [await collect(l, 0), await collect(l, 1)]));
  }
  const [inline, one, two] = runs.map((epochs) => epochs.map(comparable));
  assert.deepEqual(one, inline);
  assert.deepEqual(two, inline);
  const [epoch0, epoch1] = runs[0];
  assert.deepEqual(epoch0.map((b) => b.size), [16, 16, 16, 2], 'last partial batch kept');
  for (const epoch of [epoch0, epoch1]) {
    const seen = epoch.flatMap((b) => Array.from(b.indices)).sort((a, b) => a - b);
    assert.deepEqual(seen, Array.from({ length: 50 }, (_, i) => i), 'every sample once per epoch');
  }
  assert.notDeepEqual(Array.from(epoch0[0].indices), Array.from(epoch1[0].indices));
  const otherSeed = await withLoader(dataset, { ...train, seed: 6, workers: 0 }, (l) => collect(l, 0));
  assert.notDeepEqual(Array.from(otherSeed[0].indices), Array.from(epoch0[0].indices));
});

test('each sample is augmented from (seed, epoch, position) and labelled from the dataset', async () => {
  const dataset = syntheticDataset(20);
  const batches = await withLoader(dataset, { ...train, batchSize: 8, workers: 1 }, (l) => collect(l, 2));
  const table = normalizationTable(resolveNormalization('apot', 3));
  batches.forEach((batch) => {
    assert.deepEqual([batch.channels, batch.height, batch.width, batch.epoch], [3, 8, 8, 2]);
    assert.ok(batch.waitMs >= 0);
    batch.indices.forEach((index, i) => {
      const expected = new Float32Array(SIZE);
      const aug = sampleAugmentation(5, 2, batch.index * 8 + i, CIFAR_AUGMENT);
      transformImage(dataset.images, index * SIZE, SHAPE, table, aug, expected, 0);
      assert.deepEqual(batch.images.subarray(i * SIZE, (i + 1) * SIZE), expected);
      assert.equal(batch.labels[i], dataset.labels[index]);
    });
  });
});

test('resuming at (epoch, step) gives the same remaining batches', async () => {
  const dataset = syntheticDataset(70);
  await withLoader(dataset, { ...train, workers: 1 }, async (loader) => {
    const full = await collect(loader, 3);
    const resumed = await collect(loader, 3, 2);
    assert.deepEqual(comparable(resumed), comparable(full.slice(2)));
    assert.deepEqual(await collect(loader, 3, loader.stepsPerEpoch), []);
    assert.throws(() => loader.epoch(3, loader.stepsPerEpoch + 1), /startStep 6 outside 0\.\.5/);
  });
});

test('order hash is the sha256 of the epoch permutation; dropLast drops the partial batch', async () => {
  const dataset = syntheticDataset(50);
  await withLoader(dataset, { ...train, workers: 0, dropLast: true }, async (loader) => {
    const order = loader.order(4);
    const expected = createHash('sha256').update(Buffer.from(order.buffer)).digest('hex');
    assert.equal(loader.orderHash(4), expected);
    assert.notEqual(loader.orderHash(5), expected);
    const batches = await collect(loader, 4);
    assert.equal(loader.stepsPerEpoch, 3);
    assert.deepEqual(batches.map((b) => b.size), [16, 16, 16]);
    assert.deepEqual(Array.from(batches[0].indices), Array.from(order.subarray(0, 16)));
  });
});

test('evaluation loader: dataset order, no augmentation, normalization only', async () => {
  const dataset = syntheticDataset(10, false);
  const loader = createEvalLoader(dataset, { batchSize: 4, normalization: 'ewgs', workers: 1 });
  try {
    const batches = await collect(loader, 0);
    assert.deepEqual(batches.map((b) => Array.from(b.indices)), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]);
    const norm = resolveNormalization('ewgs', 3);
    const plane = 64;
    const images = batches.flatMap((b) => Array.from(b.images));
    images.forEach((value, i) => {
      const c = Math.floor(i / plane) % 3;
      assert.equal(value, Math.fround((dataset.images[i] / 255 - norm.mean[c]) / norm.std[c]));
    });
  } finally {
    await loader.close();
  }
});

test('an error inside a worker rejects with its message; a closed loader rejects', async () => {
  const dataset = syntheticDataset(4);
  const pool = new WorkerPool('augment', 1, {
    images: dataset.images,
    count: dataset.count,
    ...SHAPE,
    table: normalizationTable(resolveNormalization('none', 3)),
    augment: null,
    seed: 0,
  });
  try {
    await assert.rejects(pool.run({ epoch: 0, firstPosition: 0, indices: Uint32Array.from([1, 9]) }), /sample index 9 out of range: the dataset has 4 images/);
    const ok = await pool.run<ArrayBuffer>({ epoch: 0, firstPosition: 0, indices: Uint32Array.from([3]) });
    assert.equal(ok.byteLength, SIZE * 4, 'the worker keeps serving after a failed task');
  } finally {
    await pool.close();
  }
  await assert.rejects(pool.run({ epoch: 0, firstPosition: 0, indices: new Uint32Array(1) }), /worker pool is closed/);

  const loader = new DataLoader(dataset, { ...train, workers: 1 });
  await loader.close();
  await assert.rejects(collect(loader, 0), /data loader: epoch 0 step 0: worker pool is closed/);
});

test('bad loader options are errors', () => {
  const dataset = syntheticDataset(4);
  assert.throws(() => new DataLoader(dataset, { batchSize: 0 }), /batchSize must be a positive integer, got 0/);
  assert.throws(() => new DataLoader(dataset, { batchSize: 2, workers: -1 }), /workers must be an integer >= 0/);
  assert.throws(() => new DataLoader({ ...dataset, count: 5 }, { batchSize: 2 }), /images hold 768 bytes, expected 5 x 3x8x8/);
  assert.throws(() => new DataLoader(dataset, { batchSize: 2, normalization: 'mnist' }), /normalization 'mnist' has 1 means/);
  assert.throws(() => new DataLoader(dataset, { batchSize: 2, workers: 0 }).epoch(-1), /epoch must be an integer >= 0, got -1/);
});
