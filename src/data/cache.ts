/**
 * The data cache: downloaded archives and decoded image-folder datasets, under TINYQUANT_CACHE or
 * ~/.cache/tinyquant. Decoded datasets are stored as one binary file each so that a JPEG archive is
 * decoded once, not at every run.
 *
 * File layout (little-endian): 8-byte magic "TQDS0001", u32 header length, UTF-8 JSON header
 * {@link CacheHeader}, zero padding to a multiple of 8, labels (int32 x count), images (uint8).
 * The header holds the sha256 of labels and images, checked at every load: a file damaged or edited
 * after it was written (zeroed pixels) is decoded again from its source, with a warning, never
 * trained on. A file without the hash (written by an older tinyquant) is decoded again too.
 */

import { createHash } from 'node:crypto';
import { closeSync, fstatSync, mkdirSync, openSync, readSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { allocShared, imageSize, type ImageDataset, type Split } from './dataset.js';
import { writeFileAtomic } from './files.js';

const MAGIC = 'TQDS0001';

/** The cache directory (not created). */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.TINYQUANT_CACHE || join(homedir(), '.cache', 'tinyquant');
}

interface CacheHeader {
  key: string;
  name: string;
  split: Split;
  count: number;
  channels: number;
  height: number;
  width: number;
  classes: string[];
  source: string;
  /** sha256 (hex) of the labels' bytes followed by the images'. */
  sha256: string;
}

function payloadHash(labels: Uint8Array, images: Uint8Array): string {
  return createHash('sha256').update(labels).update(images).digest('hex');
}

function labelBytes(labels: Int32Array): Uint8Array {
  return new Uint8Array(labels.buffer, labels.byteOffset, labels.byteLength);
}

/** Store a dataset under `path`, tagged with `key` (what it was decoded from). Written atomically. */
export function writeDatasetCache(path: string, key: string, d: ImageDataset): void {
  const header: CacheHeader = {
    key,
    name: d.name,
    split: d.split,
    count: d.count,
    channels: d.channels,
    height: d.height,
    width: d.width,
    classes: d.classes,
    source: d.source,
    sha256: payloadHash(labelBytes(d.labels), d.images),
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(align8(MAGIC.length + 4 + json.length));
  prefix.write(MAGIC, 0, 'latin1');
  prefix.writeUInt32LE(json.length, MAGIC.length);
  json.copy(prefix, MAGIC.length + 4);
  const labels = labelBytes(d.labels);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileAtomic(path, [prefix, labels, d.images]);
}

/**
 * Load a cached dataset if `path` exists, is complete, was made from `key` and matches its sha256;
 * otherwise undefined (the caller decodes again and overwrites it). A hash mismatch is told to `log`.
 */
export function readDatasetCache(path: string, key: string, log?: (message: string) => void): ImageDataset | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const fileSize = fstatSync(fd).size;
    const head = readExactly(fd, MAGIC.length + 4, 0);
    if (!head || head.toString('latin1', 0, MAGIC.length) !== MAGIC) return undefined;
    const jsonLength = head.readUInt32LE(MAGIC.length);
    const json = readExactly(fd, jsonLength, MAGIC.length + 4);
    if (!json) return undefined;
    const header = parseHeader(json);
    if (header?.key !== key || typeof header.sha256 !== 'string') return undefined;
    const labelsAt = align8(MAGIC.length + 4 + jsonLength);
    const imagesAt = labelsAt + 4 * header.count;
    const imageBytes = header.count * imageSize(header);
    if (fileSize !== imagesAt + imageBytes) return undefined;
    const labels = new Int32Array(header.count);
    readInto(fd, new Uint8Array(labels.buffer), labelsAt);
    const images = allocShared(imageBytes);
    readInto(fd, images, imagesAt);
    if (payloadHash(labelBytes(labels), images) !== header.sha256) {
      log?.(`warning: the decoded-image cache ${path} does not match its sha256 (damaged or modified); decoding the images again`);
      return undefined;
    }
    const { key: _key, sha256: _sha256, ...meta } = header;
    return { ...meta, images, labels };
  } finally {
    closeSync(fd);
  }
}

function parseHeader(json: Buffer): CacheHeader | undefined {
  try {
    return JSON.parse(json.toString('utf8')) as CacheHeader;
  } catch {
    return undefined; // damaged cache file: decode again
  }
}

function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

function readExactly(fd: number, length: number, position: number): Buffer | undefined {
  const out = Buffer.alloc(length);
  return readInto(fd, out, position) ? out : undefined;
}

function readInto(fd: number, target: Uint8Array, position: number): boolean {
  let done = 0;
  // readSync moves at most 2 GiB per call; loop until the target is full.
  while (done < target.length) {
    const n = readSync(fd, target, done, target.length - done, position + done);
    if (n === 0) return false;
    done += n;
  }
  return true;
}
