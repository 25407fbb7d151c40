/**
 * CIFAR-10 / CIFAR-100 in the official binary format: records of label byte(s) + 3072 pixel bytes
 * (1024 R, 1024 G, 1024 B, each 32x32 row-major). Read from an extracted folder (plain or gzipped
 * batch files) or straight from the distributed `.tar.gz`.
 */

import { allocShared, checkLabelRange, type ImageDataset, type Split } from './dataset.js';
import { DataFileError } from './errors.js';
import { findPlainOrGz, readMaybeGzip, textLines, type InflateLimit } from './files.js';
import { readTarFile } from './tar.js';

export type CifarKind = 'cifar10' | 'cifar100';

const PIXELS = 3 * 32 * 32;

export interface CifarLayout {
  title: string;
  /** Folder inside the official archive (and usual extracted folder name). */
  folder: string;
  /** File name of the official binary archive. */
  archive: string;
  /** File name of the JPEG image-folder archive used as a fallback. */
  jpegArchive: string;
  /** Label bytes before the pixels: CIFAR-100 stores coarse then fine. */
  labelBytes: 1 | 2;
  classCount: number;
  coarseClassCount?: number;
  batches: Record<Split, string[]>;
  /** Records in each of the official batch files of a split (the most a batch file is read to). */
  recordsPerBatch: Record<Split, number>;
  namesFile: string;
  coarseNamesFile?: string;
}

export const CIFAR_LAYOUTS: Record<CifarKind, CifarLayout> = {
  cifar10: {
    title: 'CIFAR-10',
    folder: 'cifar-10-batches-bin',
    archive: 'cifar-10-binary.tar.gz',
    jpegArchive: 'cifar-10-jpeg.tar.gz',
    labelBytes: 1,
    classCount: 10,
    batches: { train: [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`), test: ['test_batch.bin'] },
    recordsPerBatch: { train: 10000, test: 10000 },
    namesFile: 'batches.meta.txt',
  },
  cifar100: {
    title: 'CIFAR-100',
    folder: 'cifar-100-binary',
    archive: 'cifar-100-binary.tar.gz',
    jpegArchive: 'cifar-100-jpeg.tar.gz',
    labelBytes: 2,
    classCount: 100,
    coarseClassCount: 20,
    batches: { train: ['train.bin'], test: ['test.bin'] },
    recordsPerBatch: { train: 50000, test: 10000 },
    namesFile: 'fine_label_names.txt',
    coarseNamesFile: 'coarse_label_names.txt',
  },
};

/** The official CIFAR-10 class order (used when batches.meta.txt is not at hand). */
export const CIFAR10_CLASSES = [
  'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck',
];

export interface CifarPart {
  /** File the bytes came from, for error messages (e.g. 'archive.tar.gz:cifar-10-batches-bin/x.bin'). */
  source: string;
  bytes: Uint8Array;
}

interface CifarNames {
  classes?: string[];
  coarseClasses?: string[];
  /** The files the names came from, for errors. */
  classesFile?: string;
  coarseClassesFile?: string;
}

/** Label-name files are a few hundred bytes; gzipped ones inflate to this at most. */
const NAMES_LIMIT: InflateLimit = { maxBytes: 1 << 16, what: 'a CIFAR label-name file' };

/** The most a batch file of a split inflates to: the official file's size. */
function batchLimit(kind: CifarKind, split: Split): InflateLimit {
  const layout = CIFAR_LAYOUTS[kind];
  const records = layout.recordsPerBatch[split];
  return { maxBytes: records * cifarRecordSize(kind), what: `a ${layout.title} ${split} batch file (${records} records)` };
}

/** Bytes per record for a CIFAR kind. */
export function cifarRecordSize(kind: CifarKind): number {
  return CIFAR_LAYOUTS[kind].labelBytes + PIXELS;
}

/** Parse the batch files of one split, in order, into one dataset. */
export function parseCifar(kind: CifarKind, split: Split, parts: CifarPart[], names: CifarNames): ImageDataset {
  const layout = CIFAR_LAYOUTS[kind];
  const recordSize = cifarRecordSize(kind);
  const classes = checkNames(names.classes, layout.classCount, names.classesFile, `${layout.title} class names`) ?? defaultClasses(kind);
  for (const part of parts) checkRecordSize(part, recordSize, layout.title);
  const count = parts.reduce((n, p) => n + p.bytes.length / recordSize, 0);
  const images = allocShared(count * PIXELS);
  const labels = new Int32Array(count);
  const coarseLabels = layout.labelBytes === 2 ? new Int32Array(count) : undefined;
  let at = 0;
  for (const part of parts) {
    const records = part.bytes.length / recordSize;
    const first = at;
    for (let r = 0; r < records; r++, at++) {
      const base = r * recordSize;
      labels[at] = part.bytes[base + layout.labelBytes - 1];
      if (coarseLabels) coarseLabels[at] = part.bytes[base];
      images.set(part.bytes.subarray(base + layout.labelBytes, base + recordSize), at * PIXELS);
    }
    checkLabelRange(labels.subarray(first, at), layout.classCount, `${layout.title} label`, part.source);
    if (coarseLabels) checkLabelRange(coarseLabels.subarray(first, at), layout.coarseClassCount ?? 0, 'coarse label', part.source);
  }
  const coarseClasses = coarseLabels
    ? checkNames(names.coarseClasses, layout.coarseClassCount ?? 0, names.coarseClassesFile, `${layout.title} coarse class names`)
    : undefined;
  return {
    name: kind,
    split,
    images,
    labels,
    count,
    channels: 3,
    height: 32,
    width: 32,
    classes,
    source: parts.map((p) => p.source).join(', '),
    ...(coarseLabels ? { coarseLabels, coarseClasses: coarseClasses ?? [] } : {}),
  };
}

function defaultClasses(kind: CifarKind): string[] {
  if (kind === 'cifar10') return [...CIFAR10_CLASSES];
  throw new Error(`CIFAR-100: ${CIFAR_LAYOUTS.cifar100.namesFile} is needed for the class names and was not found`);
}

function checkRecordSize(part: CifarPart, recordSize: number, title: string): void {
  const { length } = part.bytes;
  if (length === 0 || length % recordSize !== 0) {
    throw new DataFileError(
      part.source,
      `${length} bytes is not a whole number of ${recordSize}-byte ${title} records ` +
        `(${Math.floor(length / recordSize)} records + ${length % recordSize} bytes): truncated, or not ${title}`,
    );
  }
}

function checkNames(names: string[] | undefined, expected: number, file: string | undefined, what: string): string[] | undefined {
  if (names && names.length !== expected) throw new DataFileError(file ?? what, `${file ? `${what}: ` : ''}expected ${expected} names, found ${names.length}`);
  return names;
}

/**
 * Read a split from a folder holding the batch files (plain or `.gz`). Returns undefined when none
 * of the split's batch files is there; throws when only some are.
 */
export function readCifarFolder(dir: string, kind: CifarKind, split: Split): ImageDataset | undefined {
  const layout = CIFAR_LAYOUTS[kind];
  const found = layout.batches[split].map((name) => ({ name, path: findPlainOrGz(dir, name) }));
  const missing = found.filter((f) => !f.path).map((f) => f.name);
  if (missing.length === found.length) return undefined;
  if (missing.length > 0) {
    throw new Error(`${dir}: incomplete ${layout.title} ${split} split: missing ${missing.join(', ')} (plain or .gz)`);
  }
  const limit = batchLimit(kind, split);
  const parts = found.map((f) => ({ source: f.path as string, bytes: readMaybeGzip(f.path as string, limit) }));
  return parseCifar(kind, split, parts, readCifarNames(dir, kind));
}

/** Class names from the folder's label-name files, where present. */
export function readCifarNames(dir: string, kind: CifarKind): CifarNames {
  const layout = CIFAR_LAYOUTS[kind];
  const find = (name: string | undefined): string | undefined => (name === undefined ? undefined : findPlainOrGz(dir, name));
  const read = (path: string | undefined): string[] | undefined => (path ? textLines(readMaybeGzip(path, NAMES_LIMIT)) : undefined);
  const [classesFile, coarseClassesFile] = [find(layout.namesFile), find(layout.coarseNamesFile)];
  return { classes: read(classesFile), coarseClasses: read(coarseClassesFile), classesFile, coarseClassesFile };
}

/** Read a split straight from the official `.tar.gz` (or an uncompressed `.tar`). */
export async function readCifarArchive(path: string, kind: CifarKind, split: Split): Promise<ImageDataset> {
  const layout = CIFAR_LAYOUTS[kind];
  const namesFiles = [layout.namesFile, layout.coarseNamesFile].filter((f): f is string => f !== undefined);
  const wanted = new Set([...layout.batches[split], ...namesFiles]);
  const files = new Map<string, Buffer>();
  const baseName = (name: string): string => name.slice(name.lastIndexOf('/') + 1);
  const { maxBytes, what } = batchLimit(kind, split);
  const limits = { wants: (name: string) => wanted.has(baseName(name)), maxEntryBytes: maxBytes, limitReason: `the size of ${what}` };
  for await (const entry of readTarFile(path, limits)) {
    if (entry.type === 'file') files.set(baseName(entry.name), entry.data);
  }
  const missing = layout.batches[split].filter((name) => !files.has(name));
  if (missing.length > 0) throw new Error(`${path}: archive lacks ${missing.join(', ')} (${layout.title} ${split} split)`);
  const parts = layout.batches[split].map((name) => ({
    source: `${path}:${layout.folder}/${name}`,
    bytes: files.get(name) as Buffer,
  }));
  const names = (file: string | undefined): string[] | undefined => {
    const bytes = file === undefined ? undefined : files.get(file);
    return bytes ? textLines(bytes) : undefined;
  };
  const inArchive = (file: string | undefined): string | undefined => file && `${path}:${layout.folder}/${file}`;
  return parseCifar(kind, split, parts, {
    classes: names(layout.namesFile),
    coarseClasses: names(layout.coarseNamesFile),
    classesFile: inArchive(layout.namesFile),
    coarseClassesFile: inArchive(layout.coarseNamesFile),
  });
}
