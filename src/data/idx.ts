/**
 * MNIST-style IDX files (MNIST, Fashion-MNIST), plain or gzipped: big-endian header with magic
 * 0x0000 08 <dims> (unsigned bytes), then the dimension sizes, then the data.
 */

import { allocShared, checkLabelRange, type ImageDataset, type Split } from './dataset.js';
import { readMaybeGzip } from './files.js';

const UNSIGNED_BYTE = 0x08;

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

/** Parse an IDX file of unsigned bytes with `expectedRank` dimensions. */
export function parseIdx(bytes: Uint8Array, expectedRank: number, source: string): IdxArray {
  if (bytes.length < 4) throw new Error(`${source}: ${bytes.length} bytes, too short for an IDX header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const magic = view.getUint32(0);
  const type = (magic >>> 8) & 0xff;
  const rank = magic & 0xff;
  if (magic >>> 16 !== 0 || type !== UNSIGNED_BYTE || rank !== expectedRank) {
    throw new Error(
      `${source}: bad IDX magic 0x${magic.toString(16).padStart(8, '0')}, expected ` +
        `0x00000${UNSIGNED_BYTE.toString(16)}0${expectedRank} (unsigned bytes, ${expectedRank} dimensions)`,
    );
  }
  const headerBytes = 4 + 4 * rank;
  if (bytes.length < headerBytes) throw new Error(`${source}: truncated IDX header`);
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i));
  if (dims.some((d) => d === 0)) throw new Error(`${source}: header declares a zero dimension (${dims.join('x')}): no data to train or test on`);
  const expectedData = dims.reduce((a, b) => a * b, 1);
  const actualData = bytes.length - headerBytes;
  if (actualData !== expectedData) {
    throw new Error(`${source}: header says ${dims.join('x')} = ${expectedData} data bytes, file holds ${actualData}`);
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
  const images = parseIdx(readMaybeGzip(paths.imagesPath), 3, paths.imagesPath);
  const labels = parseIdx(readMaybeGzip(paths.labelsPath), 1, paths.labelsPath);
  const [count, height, width] = images.dims;
  if (labels.dims[0] !== count) {
    throw new Error(`${paths.labelsPath}: ${labels.dims[0]} labels, but ${paths.imagesPath} holds ${count} images`);
  }
  const labelArray = Int32Array.from(labels.data);
  checkLabelRange(labelArray, classes.length, `${paths.labelsPath}: label`);
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
