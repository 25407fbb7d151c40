/**
 * Image-folder datasets: one subfolder per class holding JPEG/PNG files (classes sorted by name,
 * files sorted by name within a class), either as a directory or packed in a `.tar`/`.tar.gz`.
 * Either may hold `train/` and `test/` folders, each laid out that way. Everything is decoded once
 * (on worker threads) and kept in the cache; later loads read the cache file.
 */

import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cacheDir, readDatasetCache, writeDatasetCache } from './cache.js';
import { allocShared, type ImageDataset, type Split } from './dataset.js';
import { DecodeQueue, type DecodedFile } from './decode-batch.js';
import { isImageFileName, type ImageChannels } from './image-decode.js';
import { readTarFile } from './tar.js';

export interface ImageFolderOptions {
  split: Split;
  /** Dataset name; default: the folder or archive name without extension. */
  name?: string;
  /** 3 (RGB, default) or 1 (grey). */
  channels?: ImageChannels;
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
  const channels = options.channels ?? 3;
  const name = options.name ?? basename(path).replace(/(\.tar)?(\.gz|\.tgz)?$/, '');
  const isFolder = statSync(path).isDirectory();
  const folderFiles = isFolder ? listFolder(path) : undefined;
  const key = sourceKey(path, channels, folderFiles);
  const cachePath = (root: string) =>
    join(options.cacheDir ?? cacheDir(), 'decoded', `${safeName(name)}-${hash(key).slice(0, 16)}-${root || 'all'}.tqds`);
  if (options.cache !== false) {
    for (const root of [options.split, '']) {
      const cached = readDatasetCache(cachePath(root), `${key}|${root}`);
      if (cached) {
        options.log?.(`${path}: ${cached.count} ${options.split} images from cache ${cachePath(root)}`);
        return { ...cached, name, split: options.split };
      }
    }
  }
  const started = performance.now();
  const workers = options.workers ?? defaultDecodeWorkers();
  const decoded = await decodeSource(path, channels, workers, folderFiles);
  const datasets = groupIntoDatasets(path, name, options.split, decoded, channels);
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
  return wanted;
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
  return files;
}

/** What the decoded data depends on: the archive's identity, or every listed file's. */
function sourceKey(path: string, channels: number, folderFiles?: FolderFile[]): string {
  const version = 'v1';
  if (folderFiles) {
    const listing = folderFiles.map((f) => `${f.name}\0${f.size}\0${f.mtimeMs}`).join('\n');
    return `folder|${resolve(path)}|${hash(listing)}|c${channels}|${version}`;
  }
  const stat = statSync(path);
  return `archive|${resolve(path)}|${stat.size}|${stat.mtimeMs}|c${channels}|${version}`;
}

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function safeName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, '_');
}

async function decodeSource(
  path: string,
  channels: ImageChannels,
  workers: number,
  folderFiles?: FolderFile[],
): Promise<DecodedFile[]> {
  const queue = new DecodeQueue(path, channels, workers);
  try {
    if (folderFiles) {
      for (const f of folderFiles) queue.add({ name: f.name, data: readFileSync(join(path, f.name)) });
    } else {
      for await (const entry of readTarFile(path)) {
        if (entry.type === 'file' && isImageFileName(entry.name)) queue.add({ name: entry.name, data: entry.data });
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
  channels: number,
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
  const datasets = new Map<string, ImageDataset>();
  for (const [root, placed] of byRoot) {
    const split = root === '' ? requestedSplit : (root as Split);
    datasets.set(root, buildDataset(path, name, split, placed, channels));
  }
  return datasets;
}

function compareCodePoints(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function buildDataset(path: string, name: string, split: Split, placed: Placed[], channels: number): ImageDataset {
  placed.sort((a, b) => compareCodePoints(a.className, b.className) || compareCodePoints(a.rest, b.rest));
  const classes = [...new Set(placed.map((p) => p.className))];
  const first = placed[0].file;
  const size = channels * first.height * first.width;
  const images = allocShared(placed.length * size);
  const labels = new Int32Array(placed.length);
  const classIndex = new Map(classes.map((c, i) => [c, i]));
  placed.forEach(({ file, className }, i) => {
    if (file.width !== first.width || file.height !== first.height) {
      throw new Error(
        `${path}: ${file.name} is ${file.width}x${file.height}, but ${first.name} is ${first.width}x${first.height}; ` +
          'all images of a dataset must have one size',
      );
    }
    images.set(file.pixels, i * size);
    labels[i] = classIndex.get(className) as number;
  });
  return {
    name,
    split,
    images,
    labels,
    count: placed.length,
    channels,
    height: first.height,
    width: first.width,
    classes,
    source: path,
  };
}
