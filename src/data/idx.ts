/**
 * MNIST-style IDX files (MNIST, Fashion-MNIST), plain or gzipped: big-endian header with magic
 * 0x0000 08 <dims> (unsigned bytes), then the dimension sizes, then the data.
 */

import { allocShared, checkLabelRange, type ImageDataset, type Split } from './dataset.js';
import { DataFileError } from './errors.js';
import { readMaybeGzip } from './files.js';

const UNSIGNED_BYTE = 0x08;

/** The images of the largest split this reader serves (MNIST and Fashion-MNIST: 60000 train, 10000 test, 28x28). */
const MAX_IMAGES: Record<Split, number> = { train: 60000, test: 10000 };
const MAX_IMAGE_BYTES = 28 * 28;

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

/** Parse an IDX file of unsigned bytes with `expectedRank` dimensions. */
export function parseIdx(bytes: Uint8Array, expectedRank: number, source: string): IdxArray {
  if (bytes.length < 4) throw new DataFileError(source, `${bytes.length} bytes, too short for an IDX header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const magic = view.getUint32(0);
  const type = (magic >>> 8) & 0xff;
  const rank = magic & 0xff;
  if (magic >>> 16 !== 0 || type !== UNSIGNED_BYTE || rank !== expectedRank) {
    throw new DataFileError(
      source,
      `bad IDX magic 0x${magic.toString(16).padStart(8, '0')}, expected ` +
        `0x00000${UNSIGNED_BYTE.toString(16)}0${expectedRank} (unsigned bytes, ${expectedRank} dimensions)`,
    );
  }
  const headerBytes = 4 + 4 * rank;
  if (bytes.length < headerBytes) throw new DataFileError(source, 'truncated IDX header');
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i));
  if (dims.some((d) => d === 0)) throw new DataFileError(source, `header declares a zero dimension (${dims.join('x')}): no data to train or test on`);
  const expectedData = dims.reduce((a, b) => a * b, 1);
  const actualData = bytes.length - headerBytes;
  if (actualData !== expectedData) {
    throw new DataFileError(source, `header says ${dims.join('x')} = ${expectedData} data bytes, file holds ${actualData}`);
  }
  return { dims, data: bytes.subarray(headerBytes) };
}

export interface IdxPair {
  imagesPath: string;
  labelsPath: string;
}

/** Build a dataset from an images file (N x H x W) and a labels file (N). */
export function readIdxDataset(
  name: string,
  split: Split,
  paths: IdxPair,
  classes: string[],
): ImageDataset {
  const maxImages = MAX_IMAGES[split];
  const what = `an IDX ${split} file (${maxImages} images of 28x28 at most)`;
  const images = parseIdx(readMaybeGzip(paths.imagesPath, { maxBytes: 16 + maxImages * MAX_IMAGE_BYTES, what }), 3, paths.imagesPath);
  const labels = parseIdx(readMaybeGzip(paths.labelsPath, { maxBytes: 8 + maxImages, what }), 1, paths.labelsPath);
  const [count, height, width] = images.dims;
  if (labels.dims[0] !== count) {
    throw new DataFileError(paths.labelsPath, `${labels.dims[0]} labels, but ${paths.imagesPath} holds ${count} images`);
  }
  const labelArray = Int32Array.from(labels.data);
  checkLabelRange(labelArray, classes.length, 'label', paths.labelsPath);
  const pixels = allocShared(images.data.length);
  pixels.set(images.data);
  return {
    name,
    split,
    images: pixels,
    labels: labelArray,
    count,
    channels: 1,
    height,
    width,
    classes,
    source: `${paths.imagesPath}, ${paths.labelsPath}`,
  };
}
