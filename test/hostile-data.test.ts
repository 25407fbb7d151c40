/**
 * Hostile dataset files (issue 17): decompression bombs and huge declared sizes are refused before
 * the memory is taken, with a DataFileError (TarError for archives) naming the file; images
 * declaring huge dimensions and JPEGs of another colour model (CMYK) are refused naming the file.
 * Found by, and kept covered by, the fuzz targets (test/fuzz/).
 */
import assert from 'node:assert/strict';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { deflateSync } from 'node:zlib';
import { readCifarArchive, readCifarFolder } from '../src/data/cifar.js';
import { DataFileError } from '../src/data/errors.js';
import { readIdxDataset } from '../src/data/idx.js';
import { ImageDecodeError, decodeImage } from '../src/data/image-decode.js';
import { loadImageFolder } from '../src/data/image-folder.js';
import { TarError, readTarFile } from '../src/data/tar.js';
import { crc32 } from '../src/io/zip.js';
import { encodeJpeg, encodePng, gzip, idxFile, rgbImage, tarEntry, tempDir } from './fixtures/data/make.js';

function withTemp(run: (dir: string) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const { dir, cleanup } = tempDir('tq-hostile-');
    try {
      await run(dir);
    } finally {
      cleanup();
    }
  };
}

/** The error is `type`, one line, starts with `file` and matches `pattern`. */
function isFileError(type: typeof DataFileError, file: string, pattern: RegExp): (error: Error) => boolean {
  return (error) => {
    assert.ok(error instanceof type, `${error.constructor.name}: ${error.message}`);
    assert.equal((error as DataFileError).file, file);
    assert.ok(!error.message.includes('\n'), error.message);
    assert.match(error.message, pattern);
    return true;
  };
}

test('a CIFAR .bin.gz inflating beyond the official batch size is refused before it is inflated', withTemp((dir) => {
  const file = join(dir, 'test_batch.bin.gz');
  writeFileSync(file, gzip(new Uint8Array(10001 * 3073))); // one record more than the official test batch
  assert.ok(statSync(file).size < 100_000);
  assert.throws(() => readCifarFolder(dir, 'cifar10', 'test'), isFileError(DataFileError, file, /inflates to more than 30730000 bytes, the most a CIFAR-10 test batch file \(10000 records\) holds \(a decompression bomb, or not this dataset\)/));
}));

test('an IDX .gz inflating beyond the MNIST split sizes is refused', withTemp((dir) => {
  const imagesPath = join(dir, 'images');
  const labelsPath = join(dir, 'labels.gz');
  writeFileSync(imagesPath, idxFile([1, 28, 28], new Uint8Array(784)));
  writeFileSync(labelsPath, gzip(idxFile([20000], new Uint8Array(20000))));
  assert.throws(() => readIdxDataset('mnist', 'test', { imagesPath, labelsPath }, ['0', '1']), isFileError(DataFileError, labelsPath, /inflates to more than 10008 bytes/));
}));

/** A tar header declaring `size` bytes for `name`, with no data after it. */
function lyingTar(name: string, size: number): Buffer {
  return Buffer.concat(tarEntry(name, '0', Buffer.alloc(0), '', size));
}

async function readAll(path: string): Promise<void> {
  for await (const entry of readTarFile(path)) void entry;
}

test('tar: an entry declaring more than its reader allows is refused before its data is read; huge declared sizes cost no memory', withTemp(async (dir) => {
  const cifar = join(dir, 'cifar-10-binary.tar.gz');
  writeFileSync(cifar, gzip(lyingTar('cifar-10-batches-bin/test_batch.bin', 40_000_000)));
  await assert.rejects(readCifarArchive(cifar, 'cifar10', 'test'), isFileError(TarError, cifar, /'cifar-10-batches-bin\/test_batch\.bin' at byte 0 is 40000000 bytes, more than the 30730000 allowed/));

  const images = join(dir, 'images.tar');
  writeFileSync(images, lyingTar('train/cat/huge.png', 100 * 2 ** 20));
  await assert.rejects(loadImageFolder(images, { split: 'train', workers: 0, cache: false }), isFileError(TarError, images, /'train\/cat\/huge\.png' at byte 0 is 104857600 bytes, more than the 67108864 allowed \(an image file of 4096x4096 pixels at most\)/));

  // GNU base-256 sizes: 2^40 bytes is only a truncated archive (nothing is allocated for it); beyond 2^53 is no size
  const base256 = (bytes: number[]): Buffer => {
    const header = lyingTar('a.bin', 0);
    header.fill(0, 124, 136);
    header[124] = 0x80;
    header.set(bytes, 136 - bytes.length);
    header.fill(0x20, 148, 156);
    const sum = header.reduce((a, b) => a + b, 0);
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    return header;
  };
  writeFileSync(join(dir, 'big.tar'), base256([1, 0, 0, 0, 0, 0]));
  await assert.rejects(readAll(join(dir, 'big.tar')), isFileError(TarError, join(dir, 'big.tar'), /truncated: entry at byte 0 needs 1099511627776 bytes, archive ends after 0/));
  writeFileSync(join(dir, 'huge.tar'), base256([0x7f, 0, 0, 0, 0, 0, 0, 0, 0]));
  await assert.rejects(readAll(join(dir, 'huge.tar')), isFileError(TarError, join(dir, 'huge.tar'), /corrupt tar header at byte 0: the size field \(base-256\) is beyond 2\^53 bytes/));
}));

/** A PNG chunk: length, type, data, CRC of type and data. */
function chunk(type: string, data: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const out = Buffer.alloc(body.length + 8);
  out.writeUInt32BE(data.length, 0);
  body.copy(out, 4);
  out.writeUInt32BE(crc32(body), body.length + 4);
  return out;
}

/** A PNG declaring width x height (8-bit, colour type 2 RGB or 0 grey) whose image data inflates to `data`. */
function pngOf(width: number, height: number, data: Uint8Array, { colourType = 2, interlace = 0 } = {}): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, colourType, 0, 0, interlace], 8);
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(data)), chunk('IEND', new Uint8Array(0))]);
}

/** A 300-byte PNG declaring width x height (8-bit RGB) with a few bytes of image data. */
function hugePng(width: number, height: number): Buffer {
  return pngOf(width, height, new Uint8Array(1000));
}

/** A JPEG whose frame header declares CMYK: the encoder's YCbCr frame with a fourth component added. */
function cmykJpeg(): Buffer {
  const jpeg = encodeJpeg(4, 4, rgbImage(4, 4, () => 128));
  const sof = jpeg.indexOf(Buffer.from([0xff, 0xc0]));
  const length = jpeg.readUInt16BE(sof + 2);
  assert.equal(jpeg[sof + 9], 3, 'the encoder writes 3 components');
  const frame = Buffer.concat([jpeg.subarray(sof, sof + 2 + length), Buffer.from([4, 0x11, 0])]);
  frame.writeUInt16BE(length + 3, 2);
  frame[9] = 4;
  return Buffer.concat([jpeg.subarray(0, sof), frame, jpeg.subarray(sof + 2 + length)]);
}

test('images: a small PNG declaring huge dimensions and a CMYK JPEG are refused, naming the file', withTemp(async (dir) => {
  const png = hugePng(100_000, 100_000);
  assert.ok(png.length < 400);
  assert.throws(() => decodeImage(png), (e: Error) => e instanceof ImageDecodeError && /^PNG declares 100000x100000 pixels, more than the 4096x4096 decoded at most$/.test(e.message));
  assert.throws(() => decodeImage(cmykJpeg()), (e: Error) => e instanceof ImageDecodeError && /^JPEG with 4 colour components \(CMYK or YCCK\): only greyscale and RGB JPEGs are supported; convert it to RGB$/.test(e.message));
  assert.equal(decodeImage(encodeJpeg(4, 4, rgbImage(4, 4, () => 128))).channels, 3);

  for (const [name, bytes, message] of [['huge.png', png, /PNG declares 100000x100000 pixels/], ['print.jpg', cmykJpeg(), /JPEG with 4 colour components \(CMYK or YCCK\)/]] as const) {
    const root = join(dir, name.replace('.', '-'));
    mkdirSync(join(root, 'cat'), { recursive: true });
    writeFileSync(join(root, 'cat', 'a.png'), encodePng(4, 4, rgbImage(4, 4, () => 9)));
    writeFileSync(join(root, 'cat', name), bytes);
    await assert.rejects(loadImageFolder(root, { split: 'train', workers: 0, cache: false }), isFileError(DataFileError, `${root}: cat/${name}`, new RegExp(`cannot decode image: ${message.source}`)));
  }
}));

test('PNG: a tall image of few pixels is refused by its side; image data shorter than the header declares is refused, not zero-filled', () => {
  // 1 x 12714497 grey pixels in 60 bytes: under the pixel limit, but 12 million rows took the decoder 6 s and 1.4 GB (found by npm run fuzz)
  const tall = pngOf(1, 12714497, new Uint8Array(2));
  assert.ok(tall.length < 100);
  assert.throws(() => decodeImage(tall), (e: Error) => e instanceof ImageDecodeError && /^PNG declares 1x12714497 pixels, more than the 4096x4096 decoded at most$/.test(e.message));
  // 4x4 grey: 4 rows of a filter byte and 4 pixels (20 bytes); 2 rows of them decoded as a 4x4 image before
  const rows = (n: number) => Uint8Array.from({ length: n * 5 }, (_, i) => (i % 5 === 0 ? 0 : 10 * i));
  assert.deepEqual([...decodeImage(pngOf(4, 4, rows(4), { colourType: 0 })).pixels], [...rows(4)].filter((_, i) => i % 5 !== 0));
  assert.throws(() => decodeImage(pngOf(4, 4, rows(2), { colourType: 0 })), (e: Error) => e instanceof ImageDecodeError && /^corrupt or truncated PNG: the image data inflates to 10 bytes, its header needs 20$/.test(e.message));
  // Adam7: a 5x3 RGB image's seven passes take 4 + 4 + 0 + 4 + 10 + 14 + 16 = 52 bytes (rows of a filter byte and 3 bytes a pixel)
  const interlaced = (bytes: number) => pngOf(5, 3, new Uint8Array(bytes), { interlace: 1 });
  assert.deepEqual([decodeImage(interlaced(52)).width, decodeImage(interlaced(52)).height], [5, 3]);
  assert.throws(() => decodeImage(interlaced(51)), /the image data inflates to 51 bytes, its header needs 52/);
  const cut = pngOf(4, 4, rows(4), { colourType: 0 });
  const idat = cut.indexOf('IDAT');
  cut.writeUInt32BE(cut.readUInt32BE(idat - 4) - 4, idat - 4); // the zlib stream cut short (CRC aside)
  assert.throws(() => decodeImage(cut), (e: Error) => e instanceof ImageDecodeError && !e.message.includes('\n'));
});
