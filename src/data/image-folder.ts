/**
 * Image-folder datasets: one subfolder per class holding JPEG/PNG files (classes sorted by name,
 * files sorted by name within a class), either as a directory or packed in a `.tar`/`.tar.gz`.
 * Either may hold `train/` and `test/` folders, each laid out that way; class indices come from the
 * class folders of all splits together. Every image must have one size and one colour model unless
 * asked to convert (`channels`) or resize (`imageSize` with `resize`). Everything is decoded once
 * (on worker threads) and kept in the cache; later loads read the cache file.
 */

import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, type Stats, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cacheDir, readDatasetCache, writeDatasetCache } from './cache.js';
import { allocShared, type ImageDataset, type Split } from './dataset.js';
import { DecodeQueue, type DecodedFile } from './decode-batch.js';
import { MAX_IMAGE_FILE_BYTES, isImageFileName, type ImageChannels } from './image-decode.js';
import { resizeArea } from './resize.js';
import { readTarFile } from './tar.js';

export interface ImageFolderOptions {
  split: Split;
  /** Dataset name; default: the folder or archive name without extension. */
  name?: string;
  /** 3 (RGB; grey images replicated) or 1 (grey; colour reduced to BT.601 luma). Default: the files' own, which must agree. */
  channels?: ImageChannels;
  /** The size every image must have, [height, width]; default: the first image's. */
  imageSize?: readonly [number, number];
  /** Resize images of another size to `imageSize` (area averaging, see resize.ts) instead of rejecting them. */
  resize?: boolean;
  /** The dataset whose fixed size `imageSize` is (e.g. 'CIFAR-10'), named in errors, which then point to an image folder for resizing. */
  sizeOf?: string;
  /** Decoding threads; 0 decodes on the calling thread. Default: up to 2. */
  workers?: number;
  /** Read and write the decoded cache (default true). */
  cache?: boolean;
  /** Default: {@link cacheDir}(). */
  cacheDir?: string;
  /** Progress lines (decode time, cache file). */
  log?: (message: string) => void;
}

const SPLIT_FOLDERS: readonly string[] = ['train', 'test'];

/** Up to two decoding threads: this project's machines have two cores. */
export function defaultDecodeWorkers(): number {
  return Math.min(2, availableParallelism());
}

/** Load one split of an image folder or image-folder archive, decoding it on first use. */
export async function loadImageFolder(path: string, options: ImageFolderOptions): Promise<ImageDataset> {
  if (options.resize && !options.imageSize) throw new Error(`${path}: resizing needs the target imageSize [height, width]`);
  const name = options.name ?? basename(path).replace(/(\.tar)?(\.gz|\.tgz)?$/, '');
  const isFolder = statOf(path).isDirectory();
  const folderFiles = isFolder ? listFolder(path) : undefined;
  const key = sourceKey(path, options, folderFiles);
  const cachePath = (root: string) =>
    join(options.cacheDir ?? cacheDir(), 'decoded', `${safeName(name)}-${hash(key).slice(0, 16)}-${root || 'all'}.tqds`);
  if (options.cache !== false) {
    for (const root of [options.split, '']) {
      const cached = readDatasetCache(cachePath(root), `${key}|${root}`, options.log);
      if (cached) {
        options.log?.(`${path}: ${cached.count} ${options.split} images from cache ${cachePath(root)}`);
        if (root === '') noteUnsplit(path, options);
        return { ...cached, name, split: options.split };
      }
    }
  }
  const started = performance.now();
  const workers = options.workers ?? defaultDecodeWorkers();
  const decoded = await decodeSource(path, options.channels, workers, folderFiles);
  if (decoded.length === 0) throw new Error(`${path}: no JPEG or PNG images (expected <class>/<image> or train|test/<class>/<image>)`);
  const shape = commonShape(path, decoded, options);
  const datasets = groupIntoDatasets(path, name, options.split, decoded, shape);
  const seconds = (performance.now() - started) / 1000;
  options.log?.(`${path}: decoded ${decoded.length} images in ${seconds.toFixed(1)} s (${workers} decode workers)`);
  if (options.cache !== false) {
    for (const [root, dataset] of datasets) saveToCache(cachePath(root), `${key}|${root}`, dataset, options.log);
  }
  const wanted = datasets.get(options.split) ?? datasets.get('');
  if (!wanted) {
    const found = [...datasets.keys()].map((r) => `${r}/`).join(', ');
    throw new Error(`${path}: no ${options.split}/ folder of class folders (found: ${found || 'no images'})`);
  }
  if (!datasets.has(options.split)) noteUnsplit(path, options);
  return wanted;
}

/** A folder without train/ and test/ gives every image to each split: say so, since testing on training images is rarely meant. */
function noteUnsplit(path: string, options: ImageFolderOptions): void {
  options.log?.(`${path}: no train/ and test/ folders, so the ${options.split} split is every image (valSplit holds some out)`);
}

/** A cache that cannot be written (read-only home, full disk) costs time, not the run. */
function saveToCache(path: string, key: string, dataset: ImageDataset, log?: (message: string) => void): void {
  try {
    writeDatasetCache(path, key, dataset);
    log?.(`cached ${dataset.count} ${dataset.split} images in ${path}`);
  } catch (err) {
    log?.(`warning: could not write the decoded-image cache ${path}: ${(err as Error).message}`);
  }
}

function statOf(path: string): Stats {
  try {
    return statSync(path);
  } catch (err) {
    throw new Error(`image folder ${path}: ${(err as Error).message}`);
  }
}

interface FolderFile {
  /** Path relative to the folder, '/'-separated. */
  name: string;
  size: number;
  mtimeMs: number;
}

function listFolder(root: string): FolderFile[] {
  const files: FolderFile[] = [];
  const walk = (dir: string, prefix: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(join(dir, entry.name), rel);
      else if (isImageFileName(rel)) {
        const stat = statSync(join(dir, entry.name));
        files.push({ name: rel, size: stat.size, mtimeMs: stat.mtimeMs });
      }
    }
  };
  walk(root, '');
  // Name order, so that errors name the same files on every file system.
  return files.sort((a, b) => compareCodePoints(a.name, b.name));
}

/** What the decoded data depends on: the archive's identity, or every listed file's, and the conversions. */
function sourceKey(path: string, options: ImageFolderOptions, folderFiles?: FolderFile[]): string {
  const conversions = `c${options.channels ?? 'own'}|s${options.imageSize?.join('x') ?? 'own'}|r${options.resize === true}|v2`;
  if (folderFiles) {
    const listing = folderFiles.map((f) => `${f.name}\0${f.size}\0${f.mtimeMs}`).join('\n');
    return `folder|${resolve(path)}|${hash(listing)}|${conversions}`;
  }
  const stat = statSync(path);
  return `archive|${resolve(path)}|${stat.size}|${stat.mtimeMs}|${conversions}`;
}

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function safeName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, '_');
}

async function decodeSource(
  path: string,
  channels: ImageChannels | undefined,
  workers: number,
  folderFiles?: FolderFile[],
): Promise<DecodedFile[]> {
  const queue = new DecodeQueue(path, channels, workers);
  try {
    if (folderFiles) {
      for (const f of folderFiles) queue.add({ name: f.name, data: readFileSync(join(path, f.name)) });
    } else {
      const limits = { wants: isImageFileName, maxEntryBytes: MAX_IMAGE_FILE_BYTES, limitReason: 'an image file of 4096x4096 pixels at most' };
      for await (const entry of readTarFile(path, limits)) {
        if (entry.type === 'file') queue.add({ name: entry.name, data: entry.data });
      }
    }
  } catch (err) {
    await queue.abort();
    throw err;
  }
  return queue.finish();
}

interface Placed {
  file: DecodedFile;
  className: string;
  /** Path below the class folder, for ordering. */
  rest: string;
}

/**
 * Sort decoded files into datasets by layout: `<split>/<class>/<file>` gives one dataset per split
 * folder, `<class>/<file>` one dataset (key ''). A single wrapping folder around either is ignored.
 */
function groupIntoDatasets(
  path: string,
  name: string,
  requestedSplit: Split,
  files: DecodedFile[],
  shape: ImageShape,
): Map<string, ImageDataset> {
  const parts = files.map((f) => f.name.split('/'));
  let depth = 0;
  while (parts.length > 0 && parts.every((p) => p.length - depth >= 3 && p[depth] === parts[0][depth] && !SPLIT_FOLDERS.includes(p[depth]))) {
    depth++;
  }
  const splitLayout = parts.some((p) => p.length - depth >= 3 && SPLIT_FOLDERS.includes(p[depth]));
  const byRoot = new Map<string, Placed[]>();
  files.forEach((file, i) => {
    const p = parts[i].slice(depth);
    const root = splitLayout ? p[0] : '';
    const inRoot = splitLayout ? p.slice(1) : p;
    if ((splitLayout && !SPLIT_FOLDERS.includes(root)) || inRoot.length < 2) return;
    const list = byRoot.get(root) ?? [];
    list.push({ file, className: inRoot[0], rest: inRoot.slice(1).join('/') });
    byRoot.set(root, list);
  });
  checkTestClasses(path, byRoot, depth > 0 ? `${parts[0].slice(0, depth).join('/')}/` : '');
  // One class list for all splits: a test split lacking a class keeps the training split's indices.
  const classes = [...new Set([...byRoot.values()].flat().map((p) => p.className))].sort(compareCodePoints);
  const datasets = new Map<string, ImageDataset>();
  for (const [root, placed] of byRoot) {
    const split = root === '' ? requestedSplit : (root as Split);
    datasets.set(root, buildDataset(path, name, split, placed, classes, shape));
  }
  return datasets;
}

/** A class folder in test/ that train/ lacks: the model has no output trained for it. */
function checkTestClasses(path: string, byRoot: Map<string, Placed[]>, prefix: string): void {
  const train = byRoot.get('train');
  const test = byRoot.get('test');
  if (!train || !test) return;
  const trained = new Set(train.map((p) => p.className));
  const extra = [...new Set(test.map((p) => p.className))].filter((c) => !trained.has(c)).sort(compareCodePoints);
  if (extra.length > 0) {
    throw new Error(
      `${path}: the test split has class folder(s) the training split lacks: ${extra.map((c) => `${prefix}test/${c}`).join(', ')} ` +
        `(no ${prefix}train/${extra[0]}); every test class must be trained on`,
    );
  }
}

interface ImageShape {
  channels: number;
  height: number;
  width: number;
  /** Resize images of another size (else they are an error, found by commonShape). */
  resize: boolean;
}

/**
 * The shape every image gets, checked over all files before anything is built or cached: one colour
 * model unless `channels` converts, one size (the requested one, else the first file's) unless resizing.
 */
function commonShape(path: string, files: DecodedFile[], options: ImageFolderOptions): ImageShape {
  const first = files[0];
  if (options.channels === undefined) {
    const other = files.find((f) => f.colour !== first.colour);
    if (other) {
      const [grey, colour] = first.colour ? [other, first] : [first, other];
      throw new Error(
        `${path}: mixed colour models: ${grey.name} is greyscale, ${colour.name} is colour; set channels to 1 or 3 to convert every image`,
      );
    }
  }
  const [height, width] = options.imageSize ?? [first.height, first.width];
  const shape = { channels: options.channels ?? first.channels, height, width, resize: options.resize === true };
  if (shape.resize) return shape;
  const odd = files.find((f) => f.height !== height || f.width !== width);
  if (odd && options.imageSize) {
    const fix = options.sizeOf
      ? `, that of ${options.sizeOf}; dataset imagefolder with imageSize and resize scales images (--image-size, --resize)`
      : '; set resize to scale images to that size';
    throw new Error(`${path}: ${odd.name} is ${odd.height}x${odd.width} (height x width), the expected image size is ${height}x${width}${fix}`);
  }
  if (odd) {
    throw new Error(
      `${path}: ${odd.name} is ${odd.height}x${odd.width} (height x width), but ${first.name} is ${first.height}x${first.width}; ` +
        'all images of a dataset must have one size (or set imageSize and resize)',
    );
  }
  return shape;
}

function compareCodePoints(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function buildDataset(path: string, name: string, split: Split, placed: Placed[], classes: string[], shape: ImageShape): ImageDataset {
  placed.sort((a, b) => compareCodePoints(a.className, b.className) || compareCodePoints(a.rest, b.rest));
  const { channels, height, width } = shape;
  const size = channels * height * width;
  const images = allocShared(placed.length * size);
  const labels = new Int32Array(placed.length);
  const classIndex = new Map(classes.map((c, i) => [c, i]));
  placed.forEach(({ file, className }, i) => {
    const sameSize = file.height === height && file.width === width;
    images.set(sameSize ? file.pixels : resizeArea(file.pixels, channels, file.height, file.width, height, width), i * size);
    labels[i] = classIndex.get(className) as number;
  });
  return { name, split, images, labels, count: placed.length, channels, height, width, classes, source: path };
}
