/**
 * `loadDataset`: find a dataset split on disk, in this order of directories: the explicit
 * `dataDir`, each directory of TINYQUANT_DATA (':'-separated), the cache directory, and
 * /usr/share/datasets (Debian's dataset packages); download it into the cache when allowed.
 */

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir } from './cache.js';
import { CIFAR10_CLASSES, CIFAR_LAYOUTS, readCifarArchive, readCifarFolder, readCifarNames, type CifarKind } from './cifar.js';
import { holdOut, type ImageDataset, type Split } from './dataset.js';
import { downloadFirstVerified, remoteUrls, type RemoteFile } from './download.js';
import { findPlainOrGz } from './files.js';
import { readIdxDataset } from './idx.js';
import { loadImageFolder } from './image-folder.js';
import type { ImageChannels } from './image-decode.js';

export type DatasetName = 'cifar10' | 'cifar100' | 'mnist' | 'fashion-mnist' | 'imagefolder';

export const DATASET_NAMES: readonly DatasetName[] = ['cifar10', 'cifar100', 'mnist', 'fashion-mnist', 'imagefolder'];

export interface LoadDatasetOptions {
  name: DatasetName;
  split: Split;
  /** Searched first; may also be the dataset's own folder (e.g. .../cifar-10-batches-bin). */
  dataDir?: string;
  /** imagefolder only: the folder or .tar(.gz) archive. */
  path?: string;
  /** Fetch into the cache when not found (default false). */
  download?: boolean;
  /** imagefolder only: convert every image to 3 (RGB) or 1 (grey) channels; default: the files' own, which must agree. */
  channels?: ImageChannels;
  /** imagefolder only: the size every image must have, [height, width] (default: the first image's). */
  imageSize?: readonly [number, number];
  /** imagefolder only: resize images of another size to `imageSize` instead of rejecting them. */
  resize?: boolean;
  /**
   * Hold out this fraction of the training split (stratified by class, seeded by `seed`): 'train'
   * is the rest and 'test' the held-out images; the dataset's own test split is not read.
   */
  valSplit?: number;
  /** Seed of the held-out split (default 0). */
  seed?: number;
  /** Threads for decoding image archives (default up to 2). */
  decodeWorkers?: number;
  /** Progress lines (decoding, downloading). */
  log?: (message: string) => void;
  /** Environment to read TINYQUANT_DATA / TINYQUANT_CACHE / TINYQUANT_DATA_MIRROR from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** Debian's dataset packages (e.g. dataset-fashion-mnist) install below this folder. */
const SYSTEM_DATASETS = '/usr/share/datasets';

/** The directories searched, in order. */
export function dataSearchDirs(dataDir: string | undefined, env: NodeJS.ProcessEnv = process.env): string[] {
  const fromEnv = (env.TINYQUANT_DATA ?? '').split(':').filter((d) => d.length > 0);
  const dirs = [...(dataDir ? [dataDir] : []), ...fromEnv, cacheDir(env), SYSTEM_DATASETS];
  return [...new Set(dirs)];
}

export async function loadDataset(options: LoadDatasetOptions): Promise<ImageDataset> {
  if (!options.valSplit) return loadSplit(options);
  const { train, heldOut } = holdOut(await loadSplit({ ...options, split: 'train' }), options.valSplit, options.seed ?? 0);
  return options.split === 'train' ? train : heldOut;
}

async function loadSplit(options: LoadDatasetOptions): Promise<ImageDataset> {
  const env = options.env ?? process.env;
  switch (options.name) {
    case 'cifar10':
    case 'cifar100':
      return loadCifar(options.name, options, env);
    case 'mnist':
    case 'fashion-mnist':
      return loadIdx(options.name, options, env);
    case 'imagefolder':
      if (!options.path) throw new Error("dataset 'imagefolder' needs its path (dataPath, --data-path): a folder or a .tar/.tar.gz archive");
      return loadImageFolder(options.path, {
        split: options.split,
        channels: options.channels,
        imageSize: options.imageSize,
        resize: options.resize,
        workers: options.decodeWorkers,
        cacheDir: cacheDir(env),
        log: options.log,
      });
    default:
      throw new Error(`unknown dataset '${String(options.name)}' (known: ${DATASET_NAMES.join(', ')})`);
  }
}

/** Folders that may hold a dataset's files within a search directory. */
function candidateFolders(dir: string, subfolder: string, options: LoadDatasetOptions): string[] {
  return dir === options.dataDir ? [join(dir, subfolder), dir] : [join(dir, subfolder)];
}

const CIFAR_URL_BASE = 'https://www.cs.toronto.edu/~kriz/';

const CIFAR_REMOTE: Record<CifarKind, RemoteFile> = {
  cifar10: {
    relativePath: 'cifar-10-binary.tar.gz',
    urls: [`${CIFAR_URL_BASE}cifar-10-binary.tar.gz`],
    md5: 'c32a1d4ab5d03f1284b67883e8d87530',
  },
  cifar100: {
    relativePath: 'cifar-100-binary.tar.gz',
    urls: [`${CIFAR_URL_BASE}cifar-100-binary.tar.gz`],
    md5: '03b5dce01913d631647c71ecec9e9cb8',
  },
};

async function loadCifar(kind: CifarKind, options: LoadDatasetOptions, env: NodeJS.ProcessEnv): Promise<ImageDataset> {
  const layout = CIFAR_LAYOUTS[kind];
  const dirs = dataSearchDirs(options.dataDir, env);
  for (const dir of dirs) {
    for (const folder of candidateFolders(dir, layout.folder, options)) {
      const dataset = readCifarFolder(folder, kind, options.split);
      if (dataset) return dataset;
    }
    const archive = join(dir, layout.archive);
    if (existsSync(archive)) return readCifarArchive(archive, kind, options.split);
  }
  for (const dir of dirs) {
    const jpegArchive = join(dir, layout.jpegArchive);
    if (existsSync(jpegArchive)) return loadCifarImageFolder(kind, jpegArchive, dirs, options, env);
  }
  if (options.download) {
    const remote = CIFAR_REMOTE[kind];
    const destination = join(cacheDir(env), remote.relativePath);
    await fetchRemote(remote, destination, options.log, env);
    return readCifarArchive(destination, kind, options.split);
  }
  throw new Error(
    `${layout.title} ${options.split} split not found; looked in ${dirs.join(', ')}. Put one of these in one of those ` +
      `directories (or name another with dataDir / TINYQUANT_DATA): ${layout.folder}/ with ` +
      `${layout.batches[options.split].join(', ')} (plain or .gz) and ${layout.namesFile}; ` +
      `the official ${layout.archive}; or ${layout.jpegArchive} (train/<class>/*.jpg, test/<class>/*.jpg). ` +
      `Or allow downloading ${remoteUrls(CIFAR_REMOTE[kind], env).join(' or ')} (download option).`,
  );
}

/** The JPEG fallback: 32x32 colour images in class folders that are the official classes in the official order. */
async function loadCifarImageFolder(
  kind: CifarKind,
  archive: string,
  dirs: string[],
  options: LoadDatasetOptions,
  env: NodeJS.ProcessEnv,
): Promise<ImageDataset> {
  const layout = CIFAR_LAYOUTS[kind];
  const dataset = await loadImageFolder(archive, {
    split: options.split,
    name: kind,
    channels: 3,
    // CIFAR's models and normalization are for 32x32: images of another size are refused before the dataset is built.
    imageSize: [32, 32],
    sizeOf: layout.title,
    workers: options.decodeWorkers,
    cacheDir: cacheDir(env),
    log: options.log,
  });
  const official = officialCifarClasses(kind, dirs);
  if (official && official.join('\n') !== dataset.classes.join('\n')) {
    throw new Error(
      `${archive}: class folders (${dataset.classes.join(', ')}) differ from the official ${layout.title} classes ` +
        `in order (${official.join(', ')})`,
    );
  }
  if (dataset.classes.length !== layout.classCount) {
    throw new Error(`${archive}: ${dataset.classes.length} class folders in ${options.split}/, ${layout.title} has ${layout.classCount}`);
  }
  return dataset;
}

/** Class names from a label-names file in any search directory, else CIFAR-10's built-in list. */
function officialCifarClasses(kind: CifarKind, dirs: string[]): string[] | undefined {
  for (const dir of dirs) {
    const { classes } = readCifarNames(join(dir, CIFAR_LAYOUTS[kind].folder), kind);
    if (classes) return classes;
  }
  return kind === 'cifar10' ? CIFAR10_CLASSES : undefined;
}

type IdxKind = 'mnist' | 'fashion-mnist';

const IDX_FILES: Record<Split, { images: string; labels: string }> = {
  train: { images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte' },
  test: { images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte' },
};

interface IdxSource {
  title: string;
  classes: string[];
  /** Base URLs of the official host and its mirrors, tried in order. */
  bases: readonly string[];
  /** md5 of each official `.gz` file. */
  md5: Record<string, string>;
}

const IDX_SOURCES: Record<IdxKind, IdxSource> = {
  mnist: {
    title: 'MNIST',
    classes: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
    // The original host answers 403 to most clients; the second is the copy PyTorch's datasets use.
    bases: ['http://yann.lecun.com/exdb/mnist/', 'https://ossci-datasets.s3.amazonaws.com/mnist/'],
    md5: {
      'train-images-idx3-ubyte': 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
      'train-labels-idx1-ubyte': 'd53e105ee54ea40749a09fcbcd1e9432',
      't10k-images-idx3-ubyte': '9fb629c4189551a2d022fa330f9573f3',
      't10k-labels-idx1-ubyte': 'ec29112dd5afa0611ce80d1b7f02629c',
    },
  },
  'fashion-mnist': {
    title: 'Fashion-MNIST',
    classes: ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'],
    bases: [
      'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/',
      'https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/',
    ],
    md5: {
      'train-images-idx3-ubyte': '8d4fb7e6c68d591d4c3dfef9ec88bf0d',
      'train-labels-idx1-ubyte': '25c81989df183df01b3e8a0aad5dffbe',
      't10k-images-idx3-ubyte': 'bef4ecab320f06d8554ea6380940ec79',
      't10k-labels-idx1-ubyte': 'bb300cfdad3c16e7a12a480ee83cd310',
    },
  },
};

function idxRemote(kind: IdxKind, file: string): RemoteFile {
  const source = IDX_SOURCES[kind];
  return { relativePath: `${kind}/${file}.gz`, urls: source.bases.map((base) => `${base}${file}.gz`), md5: source.md5[file] };
}

async function loadIdx(kind: IdxKind, options: LoadDatasetOptions, env: NodeJS.ProcessEnv): Promise<ImageDataset> {
  const source = IDX_SOURCES[kind];
  const files = IDX_FILES[options.split];
  const dirs = dataSearchDirs(options.dataDir, env);
  for (const dir of dirs) {
    for (const folder of candidateFolders(dir, kind, options)) {
      const imagesPath = findPlainOrGz(folder, files.images);
      const labelsPath = findPlainOrGz(folder, files.labels);
      if (imagesPath && labelsPath) return readIdxDataset(kind, options.split, { imagesPath, labelsPath }, source.classes);
      if (imagesPath || labelsPath) {
        throw new Error(`${folder}: has ${imagesPath ?? labelsPath} but not ${imagesPath ? files.labels : files.images} (plain or .gz)`);
      }
    }
  }
  if (options.download) {
    const folder = join(cacheDir(env), kind);
    for (const file of [files.images, files.labels]) {
      const remote = idxRemote(kind, file);
      await fetchRemote(remote, join(cacheDir(env), remote.relativePath), options.log, env);
    }
    const paths = { imagesPath: join(folder, `${files.images}.gz`), labelsPath: join(folder, `${files.labels}.gz`) };
    return readIdxDataset(kind, options.split, paths, source.classes);
  }
  throw new Error(
    `${source.title} ${options.split} split not found; looked in ${dirs.map((d) => join(d, kind)).join(', ')}. ` +
      `Put ${files.images} and ${files.labels} (plain or .gz) in a '${kind}' folder of one of those directories ` +
      `(or name another with dataDir / TINYQUANT_DATA), or allow downloading them from ` +
      `${remoteUrls(idxRemote(kind, files.images), env).map((url) => url.replace(/[^/]*$/, '')).join(' or ')} (download option).`,
  );
}

async function fetchRemote(
  remote: RemoteFile,
  destination: string,
  log: ((message: string) => void) | undefined,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  if (existsSync(destination)) return; // an earlier verified download (downloads land only when verified)
  await downloadFirstVerified(remoteUrls(remote, env), destination, remote.md5, log);
}
