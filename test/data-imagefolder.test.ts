import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadImageFolder, readTarFile, type TarEntry } from '../src/data/index.js';
import { encodeJpeg, encodePng, gzip, paxRecord, planar, rgbImage, tarArchive, tarEntry, tempDir } from './fixtures/data/make.js';

async function entriesOf(path: string): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  for await (const e of readTarFile(path)) out.push({ ...e, data: Buffer.from(e.data) });
  return out;
}

test('tar reader: ustar prefix, GNU long names, pax paths, directories, data across blocks', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const long = `${'d'.repeat(60)}/${'e'.repeat(60)}/file-with-a-long-name.bin`;
    const big = Buffer.alloc(70_000, 7);
    for (const style of ['gnu', 'pax', 'ustar'] as const) {
      const path = join(dir, `${style}.tar`);
      writeFileSync(path, tarArchive([{ name: 'top', type: 'directory' }, { name: long, data: big }, { name: 'top/small.txt', data: Buffer.from('hi') }], style));
      const entries = await entriesOf(path);
      assert.deepEqual(entries.map((e) => [e.name, e.type, e.size]), [['top', 'directory', 0], [long, 'file', 70_000], ['top/small.txt', 'file', 2]], style);
      assert.deepEqual(entries[1].data, big);
      assert.equal(entries[2].data.toString(), 'hi');
    }
  } finally {
    cleanup();
  }
});

test('tar reader: truncated and corrupt archives are errors naming the archive', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const archive = tarArchive([{ name: 'a.bin', data: Buffer.alloc(2000, 1) }]);
    const truncated = join(dir, 'truncated.tar.gz');
    writeFileSync(truncated, gzip(archive.subarray(0, 1500)));
    await assert.rejects(entriesOf(truncated), /truncated\.tar\.gz: truncated: entry at byte 0 needs 2000 bytes/);
    const corrupt = join(dir, 'corrupt.tar');
    const damaged = Buffer.from(archive);
    damaged[10] ^= 0xff;
    writeFileSync(corrupt, damaged);
    await assert.rejects(entriesOf(corrupt), /corrupt\.tar: not a tar archive or corrupt tar header at byte 0/);
    // A gzip trailer whose CRC does not match the data (what `gzip -t` catches), after a complete archive.
    const badCrc = gzip(archive);
    badCrc[badCrc.length - 8] ^= 0xff;
    writeFileSync(join(dir, 'crc.tar.gz'), badCrc);
    await assert.rejects(entriesOf(join(dir, 'crc.tar.gz')), /crc\.tar\.gz: .*(check|crc)/i);
    // A pax size that points backwards would re-read the same header forever: refused.
    const backwards = Buffer.concat([...tarEntry('PaxHeader', 'x', paxRecord('size', '-512')), ...tarEntry('a.bin', '0', Buffer.alloc(10)), Buffer.alloc(1024)]);
    writeFileSync(join(dir, 'pax.tar'), backwards);
    await assert.rejects(entriesOf(join(dir, 'pax.tar')), /pax\.tar: pax header at byte 0 gives size "-512", not a byte count/);
  } finally {
    cleanup();
  }
});

const classColour = (label: number, i: number) => (x: number, y: number, c: number) => (label * 60 + i * 20 + x * 3 + y * 5 + c * 40) & 0xff;

/** train/ and test/ with classes 'cat' and 'ant' (ant sorts first), PNG and JPEG files. */
function cifarLikeArchive(): { bytes: Buffer; pngPixels: Uint8Array } {
  const w = 8;
  const h = 6;
  const pngRgb = rgbImage(w, h, classColour(1, 0));
  const entries = [
    { name: 'train/cat/0001.png', data: encodePng(w, h, pngRgb) },
    { name: 'train/cat/0000.jpg', data: encodeJpeg(w, h, rgbImage(w, h, classColour(1, 1))) },
    { name: 'train/ant/0000.jpg', data: encodeJpeg(w, h, rgbImage(w, h, classColour(0, 0))) },
    { name: 'train/ant/notes.txt', data: Buffer.from('ignored') },
    { name: 'test/ant/0000.png', data: encodePng(w, h, rgbImage(w, h, classColour(0, 2))) },
    { name: 'test/cat/0000.png', data: encodePng(w, h, rgbImage(w, h, classColour(1, 2))) },
  ];
  return { bytes: gzip(tarArchive(entries)), pngPixels: planar(pngRgb) };
}

test('image-folder archive: sorted classes and files, exact PNG pixels, close JPEG pixels, both splits', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const archive = join(dir, 'tiny-jpeg.tar.gz');
    const { bytes, pngPixels } = cifarLikeArchive();
    writeFileSync(archive, bytes);
    const train = await loadImageFolder(archive, { split: 'train', workers: 0, cache: false });
    assert.equal(train.name, 'tiny-jpeg');
    assert.deepEqual(train.classes, ['ant', 'cat']);
    assert.deepEqual(Array.from(train.labels), [0, 1, 1]);
    assert.deepEqual([train.count, train.channels, train.height, train.width], [3, 3, 6, 8]);
    const size = 3 * 6 * 8;
    // cat/0000.jpg sorts before cat/0001.png; the PNG is lossless.
    assert.deepEqual(train.images.subarray(2 * size, 3 * size), pngPixels);
    const jpegExpected = planar(rgbImage(8, 6, classColour(1, 1)));
    const jpegError = meanAbsDiff(train.images.subarray(size, 2 * size), jpegExpected);
    assert.ok(jpegError < 6, `JPEG round trip mean error ${jpegError}`);
    const test_ = await loadImageFolder(archive, { split: 'test', workers: 0, cache: false });
    assert.deepEqual(Array.from(test_.labels), [0, 1]);
    assert.equal(test_.split, 'test');
  } finally {
    cleanup();
  }
});

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i] - b[i]);
  return sum / a.length;
}

/** A cifarLikeArchive() tiny.tar.gz in `dir` and its loader with a decoded-image cache in dir/cache, logging to `logs`. */
function cachedArchive(dir: string) {
  const archive = join(dir, 'tiny.tar.gz');
  writeFileSync(archive, cifarLikeArchive().bytes);
  const decoded = join(dir, 'cache', 'decoded');
  const logs: string[] = [];
  const load = (split: 'train' | 'test' = 'train') => loadImageFolder(archive, { split, workers: 0, cacheDir: join(dir, 'cache'), log: (m) => logs.push(m) });
  return { archive, decoded, logs, load };
}

test('image-folder archive is decoded once: later loads come from the cache until the archive changes', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const { archive, decoded, logs, load } = cachedArchive(dir);
    const first = await load('train');
    assert.match(logs.join('\n'), /decoded 5 images/);
    assert.equal(readdirSync(decoded).filter((f) => f.endsWith('.tqds')).length, 2, 'train and test cached');
    assert.ok(readdirSync(decoded).every((f) => !f.endsWith('.tmp')), 'no temp files left');
    logs.length = 0;
    const again = await load('train');
    const test_ = await load('test');
    assert.match(logs[0], /3 train images from cache/);
    assert.match(logs[1], /2 test images from cache/);
    assert.deepEqual(again.images, first.images);
    assert.deepEqual(again.labels, first.labels);
    assert.deepEqual(again.classes, first.classes);
    assert.equal(test_.count, 2);

    const later = new Date(Date.now() + 5000);
    utimesSync(archive, later, later);
    logs.length = 0;
    await load('train');
    assert.match(logs.join('\n'), /decoded 5 images/, 'a modified archive is decoded again');
  } finally {
    cleanup();
  }
});

test('decoded-image cache: a file whose pixels were zeroed after writing fails its sha256 and is decoded again, with a warning', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const { decoded, logs, load } = cachedArchive(dir);
    const first = await load();
    const file = join(decoded, readdirSync(decoded).find((f) => f.includes('-train.tqds'))!);
    const bytes = readFileSync(file);
    const imageBytes = first.images.length;
    bytes.fill(0, bytes.length - imageBytes); // the pixels, as the tester's edit did; header and labels intact
    writeFileSync(file, bytes);
    logs.length = 0;
    const again = await load();
    assert.match(logs.join('\n'), /warning: the decoded-image cache .*-train\.tqds does not match its sha256 \(damaged or modified\); decoding the images again/);
    assert.match(logs.join('\n'), /decoded 5 images/);
    assert.deepEqual(again.images, first.images, 'the pixels come from the archive, not the damaged cache');
    logs.length = 0;
    await load();
    assert.match(logs[0], /3 train images from cache/, 'the rewritten cache file is used again');
  } finally {
    cleanup();
  }
});

test('image folder on disk: flat class layout, grey conversion', async () => {
  const { dir, cleanup } = tempDir();
  try {
    for (const cls of ['b', 'a']) mkdirSync(join(dir, 'imgs', cls), { recursive: true });
    writeFileSync(join(dir, 'imgs', 'b', 'x.png'), encodePng(2, 2, rgbImage(2, 2, () => 200)));
    writeFileSync(join(dir, 'imgs', 'a', 'y.png'), encodePng(2, 2, rgbImage(2, 2, (x, y, c) => [255, 0, 0][c])));
    const d = await loadImageFolder(join(dir, 'imgs'), { split: 'test', channels: 1, workers: 0, cacheDir: join(dir, 'cache') });
    assert.deepEqual(d.classes, ['a', 'b']);
    assert.equal(d.channels, 1);
    assert.deepEqual(Array.from(d.images), [76, 76, 76, 76, 200, 200, 200, 200]); // 0.299 * 255 = 76.2
  } finally {
    cleanup();
  }
});

test('image folders: differing sizes and unreadable images are errors naming the file in the archive', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const mixed = join(dir, 'mixed.tar');
    writeFileSync(mixed, tarArchive([
      { name: 'a/1.png', data: encodePng(4, 4, rgbImage(4, 4, () => 1)) },
      { name: 'b/2.png', data: encodePng(4, 3, rgbImage(4, 3, () => 1)) },
    ]));
    await assert.rejects(
      loadImageFolder(mixed, { split: 'train', workers: 0, cache: false }),
      /mixed\.tar: b\/2\.png is 3x4 \(height x width\), but a\/1\.png is 4x4; all images of a dataset must have one size/,
    );
    // train/ and test/ of different sizes: both splits are decoded and checked together, whichever is asked for
    const splits = join(dir, 'splits.tar');
    writeFileSync(splits, tarArchive([
      { name: 'test/a/1.png', data: encodePng(8, 8, rgbImage(8, 8, () => 1)) },
      { name: 'train/a/1.png', data: encodePng(4, 4, rgbImage(4, 4, () => 1)) },
    ]));
    for (const split of ['train', 'test'] as const) {
      await assert.rejects(loadImageFolder(splits, { split, workers: 0, cache: false }), /splits\.tar: train\/a\/1\.png is 4x4 \(height x width\), but test\/a\/1\.png is 8x8; all images of a dataset must have one size/, split);
    }
    const broken = join(dir, 'broken.tar.gz');
    const good = encodePng(4, 4, rgbImage(4, 4, () => 9));
    const jpegHead = encodeJpeg(4, 4, rgbImage(4, 4, () => 9)).subarray(0, 40);
    writeFileSync(broken, gzip(tarArchive([
      { name: 'train/a/ok.png', data: good },
      { name: 'train/b/bad.jpg', data: jpegHead },
      { name: 'train/b/text.png', data: Buffer.from('not an image') },
    ])));
    for (const workers of [0, 1]) {
      await assert.rejects(
        loadImageFolder(broken, { split: 'train', workers, cache: false }),
        /broken\.tar\.gz: train\/b\/bad\.jpg: cannot decode image/,
        `${workers} workers`,
      );
    }
    const cut = join(dir, 'cut.tar.gz');
    const whole = tarArchive([{ name: 'train/a/ok.png', data: good }, { name: 'train/a/big.png', data: Buffer.alloc(5000, 1) }]);
    writeFileSync(cut, gzip(whole.subarray(0, 3000)));
    await assert.rejects(loadImageFolder(cut, { split: 'train', workers: 1, cache: false }), /cut\.tar\.gz: truncated: entry at byte \d+ needs 5000 bytes/);
    const notImage = join(dir, 'notimage.tar');
    writeFileSync(notImage, tarArchive([{ name: 'train/b/text.png', data: Buffer.from('not an image') }]));
    await assert.rejects(
      loadImageFolder(notImage, { split: 'train', workers: 1, cache: false }),
      /notimage\.tar: train\/b\/text\.png: cannot decode image: not a JPEG or PNG file/,
    );
  } finally {
    cleanup();
  }
});
