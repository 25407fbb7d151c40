import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import {
  CIFAR10_CLASSES,
  parseCifar,
  parseIdx,
  readCifarArchive,
  readCifarFolder,
  readIdxDataset,
} from '../src/data/index.js';
import { cifarRecords, gzip, idxFile, pixelAt, sharedDataDir, tarArchive, tempDir } from './fixtures/data/make.js';

test('CIFAR-10 folder: plain and gzipped batches give the same records, labels and pixels', () => {
  const { dir, cleanup } = tempDir();
  try {
    const labels = [3, 0, 9];
    writeFileSync(join(dir, 'test_batch.bin'), cifarRecords(labels.map((l) => [l])));
    writeFileSync(join(dir, 'batches.meta.txt'), `${CIFAR10_CLASSES.join('\n')}\n\n`);
    const plain = readCifarFolder(dir, 'cifar10', 'test');
    assert.ok(plain);
    assert.deepEqual(Array.from(plain.labels), labels);
    assert.equal(plain.count, 3);
    assert.deepEqual([plain.channels, plain.height, plain.width], [3, 32, 32]);
    assert.deepEqual(plain.classes, CIFAR10_CLASSES);
    assert.equal(plain.images[3072 + 5], pixelAt(1, 5));
    assert.ok(plain.images.buffer instanceof SharedArrayBuffer);

    const gzDir = join(dir, 'gz');
    mkdirSync(gzDir);
    writeFileSync(join(gzDir, 'test_batch.bin.gz'), gzip(cifarRecords(labels.map((l) => [l]))));
    const gz = readCifarFolder(gzDir, 'cifar10', 'test');
    assert.ok(gz);
    assert.deepEqual(gz.images, plain.images);
    assert.equal(readCifarFolder(gzDir, 'cifar10', 'train'), undefined, 'no train batches there');
  } finally {
    cleanup();
  }
});

test('CIFAR-10 train split needs all five batches, in order', () => {
  const { dir, cleanup } = tempDir();
  try {
    for (let i = 1; i <= 5; i++) writeFileSync(join(dir, `data_batch_${i}.bin`), cifarRecords([[i]], i * 100));
    const train = readCifarFolder(dir, 'cifar10', 'train');
    assert.ok(train);
    assert.deepEqual(Array.from(train.labels), [1, 2, 3, 4, 5]);
    assert.equal(train.images[2 * 3072], pixelAt(300, 0));
    writeFileSync(join(dir, 'data_batch_3.bin'), Buffer.alloc(0));
    assert.throws(() => readCifarFolder(dir, 'cifar10', 'train'), /data_batch_3\.bin: 0 bytes is not a whole number/);
  } finally {
    cleanup();
  }
});

test('CIFAR-100: fine labels, coarse labels and both name lists, from the official archive layout', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const fine = Array.from({ length: 100 }, (_, i) => `fine${String(i).padStart(2, '0')}`);
    const coarse = Array.from({ length: 20 }, (_, i) => `coarse${i}`);
    const archive = join(dir, 'cifar-100-binary.tar.gz');
    writeFileSync(
      archive,
      gzip(
        tarArchive([
          { name: 'cifar-100-binary', type: 'directory' },
          { name: 'cifar-100-binary/test.bin', data: cifarRecords([[19, 99], [0, 4]]) },
          { name: 'cifar-100-binary/fine_label_names.txt', data: Buffer.from(fine.join('\n')) },
          { name: 'cifar-100-binary/coarse_label_names.txt', data: Buffer.from(coarse.join('\n')) },
        ]),
      ),
    );
    const d = await readCifarArchive(archive, 'cifar100', 'test');
    assert.deepEqual(Array.from(d.labels), [99, 4]);
    assert.deepEqual(Array.from(d.coarseLabels ?? []), [19, 0]);
    assert.deepEqual(d.classes, fine);
    assert.deepEqual(d.coarseClasses, coarse);
    assert.equal(d.images[3072 + 100], pixelAt(1, 100));
    await assert.rejects(readCifarArchive(archive, 'cifar100', 'train'), /lacks train\.bin/);
  } finally {
    cleanup();
  }
});

test('CIFAR: wrong record size and out-of-range labels are errors naming the file', () => {
  const tenRecords = cifarRecords([[1], [2]]);
  assert.throws(
    () => parseCifar('cifar10', 'test', [{ source: 'x/test_batch.bin', bytes: tenRecords.subarray(0, 5000) }], {}),
    /x\/test_batch\.bin: 5000 bytes is not a whole number of 3073-byte CIFAR-10 records \(1 records \+ 1927 bytes\)/,
  );
  // A CIFAR-10 file read as CIFAR-100: 3073-byte records are not 3074-byte ones.
  assert.throws(
    () => parseCifar('cifar100', 'test', [{ source: 'y.bin', bytes: tenRecords }], { classes: new Array(100).fill('c') }),
    /y\.bin: 6146 bytes is not a whole number of 3074-byte CIFAR-100 records/,
  );
  assert.throws(
    () => parseCifar('cifar10', 'test', [{ source: 'z.bin', bytes: cifarRecords([[1], [10]]) }], {}),
    /z\.bin: CIFAR-10 label: record 1 has label 10, outside 0\.\.9/,
  );
  assert.throws(
    () => parseCifar('cifar10', 'test', [{ source: 'z.bin', bytes: tenRecords }], { classes: ['a', 'b'] }),
    /CIFAR-10 class names: expected 10 names, found 2/,
  );
});

test('CIFAR: a truncated gzip file is an error naming it', () => {
  const { dir, cleanup } = tempDir();
  try {
    const gz = gzip(cifarRecords([[1], [2]]));
    writeFileSync(join(dir, 'test_batch.bin.gz'), gz.subarray(0, gz.length - 100));
    assert.throws(() => readCifarFolder(dir, 'cifar10', 'test'), /test_batch\.bin\.gz: cannot gunzip/);
  } finally {
    cleanup();
  }
});

test('IDX: images and labels, plain or gzipped, with checked magic numbers and counts', () => {
  const { dir, cleanup } = tempDir();
  try {
    const pixels = Uint8Array.from({ length: 2 * 4 * 3 }, (_, i) => i * 5);
    const images = join(dir, 'imgs.gz');
    const labels = join(dir, 'labels');
    writeFileSync(images, gzip(idxFile([2, 4, 3], pixels)));
    writeFileSync(labels, idxFile([2], Uint8Array.from([7, 1])));
    const d = readIdxDataset('mnist', 'test', { imagesPath: images, labelsPath: labels }, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    assert.deepEqual([d.count, d.channels, d.height, d.width], [2, 1, 4, 3]);
    assert.deepEqual(Array.from(d.labels), [7, 1]);
    assert.deepEqual(Array.from(d.images), Array.from(pixels));

    writeFileSync(labels, idxFile([3], Uint8Array.from([7, 1, 2])));
    assert.throws(() => readIdxDataset('mnist', 'test', { imagesPath: images, labelsPath: labels }, ['a']), /labels: 3 labels, but .*imgs\.gz holds 2 images/);
    writeFileSync(labels, idxFile([2], Uint8Array.from([7, 1])));
    assert.throws(() => readIdxDataset('mnist', 'test', { imagesPath: images, labelsPath: labels }, ['a', 'b']), /labels: label: record 0 has label 7, outside 0\.\.1/);
  } finally {
    cleanup();
  }
  assert.throws(() => parseIdx(idxFile([2], Uint8Array.from([1, 2])), 3, 'f.idx'), /f\.idx: bad IDX magic 0x00000801, expected 0x00000803/);
  assert.throws(() => parseIdx(idxFile([2, 2, 2], new Uint8Array(7)), 3, 'g.idx'), /g\.idx: header says 2x2x2 = 8 data bytes, file holds 7/);
  assert.throws(() => parseIdx(idxFile([0, 28, 28], new Uint8Array(0)), 3, 'z.idx'), /z\.idx: header declares a zero dimension \(0x28x28\)/);
  assert.throws(() => parseIdx(idxFile([5, 0, 28], new Uint8Array(0)), 3, 'w.idx'), /w\.idx: header declares a zero dimension \(5x0x28\)/);
});

const SHARED = sharedDataDir();
const SHARED_CIFAR10 = SHARED && join(SHARED, 'cifar-10-batches-bin');

test('real CIFAR-10 test batch: first records and class names', { skip: !SHARED_CIFAR10 && 'no shared/data/cifar-10-batches-bin on this machine (set TINYQUANT_SHARED_DATA)' }, async () => {
  assert.ok(SHARED_CIFAR10);
  // Only the first records: gunzip a prefix of the stream.
  const prefix = await gunzipPrefix(join(SHARED_CIFAR10, 'test_batch.bin.gz'), 4 * 3073);
  const d = parseCifar('cifar10', 'test', [{ source: 'test_batch.bin.gz (first 4 records)', bytes: prefix }], {
    classes: readLines(join(SHARED_CIFAR10, 'batches.meta.txt')),
  });
  assert.deepEqual(d.classes, CIFAR10_CLASSES);
  // The official test set starts with a cat, a ship, a ship, an airplane.
  assert.deepEqual(Array.from(d.labels).map((l) => d.classes[l]), ['cat', 'ship', 'ship', 'airplane']);
});

function readLines(path: string): string[] {
  return readFileSync(path, 'utf8').split('\n').filter((line) => line.trim().length > 0);
}

async function gunzipPrefix(path: string, bytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let have = 0;
  const stream = createReadStream(path).pipe(createGunzip());
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    have += chunk.length;
    if (have >= bytes) break;
  }
  stream.destroy();
  return Buffer.concat(chunks).subarray(0, bytes);
}
