/**
 * The in-memory dataset shape every reader produces: all images of one split as one planar
 * uint8 block (N x C x H x W, channel planes per image, the CIFAR binary layout), labels as int32.
 */
import { InputError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { DataFileError } from './errors.js';

export type Split = 'train' | 'test';

export interface ImageDataset {
  /** Dataset name, e.g. 'cifar10', 'fashion-mnist', or the folder/archive name for image folders. */
  name: string;
  split: Split;
  /** count * channels * height * width bytes, planar per image (all of channel 0, then channel 1...). */
  images: Uint8Array;
  /** Class index per image, in [0, classes.length). */
  labels: Int32Array;
  count: number;
  channels: number;
  height: number;
  width: number;
  /** Class names; labels index into this list. */
  classes: string[];
  /** The file or folder the data came from (for CIFAR binary parts: the files, joined by ', '). */
  source: string;
  /** CIFAR-100 only: the superclass of each image and the superclass names. */
  coarseLabels?: Int32Array;
  coarseClasses?: string[];
}

/** Bytes of one image. */
export function imageSize(d: Pick<ImageDataset, 'channels' | 'height' | 'width'>): number {
  return d.channels * d.height * d.width;
}

/**
 * A zeroed byte array backed by a SharedArrayBuffer, so loader workers can read the dataset
 * without it being copied to each of them.
 */
export function allocShared(bytes: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(bytes));
}

/** Check that a dataset is internally consistent (sizes agree, labels in range). */
export function validateDataset(d: ImageDataset): void {
  const where = `dataset ${d.name}/${d.split} (${d.source})`;
  if (!Number.isInteger(d.count) || d.count < 0) throw new Error(`${where}: invalid count ${d.count}`);
  if (d.images.length !== d.count * imageSize(d)) {
    throw new Error(
      `${where}: images hold ${d.images.length} bytes, expected ${d.count} x ${d.channels}x${d.height}x${d.width}`,
    );
  }
  if (d.labels.length !== d.count) {
    throw new Error(`${where}: ${d.labels.length} labels for ${d.count} images`);
  }
  checkLabelRange(d.labels, d.classes.length, where);
}

/**
 * The test split must be what the trained model reads: one image shape and one class list (labels
 * index it). Splits may come from different files (a CIFAR test batch beside a JPEG archive, datasets
 * given in code), so this is checked before training.
 */
export function checkSplitsAgree(train: ImageDataset, test: ImageDataset): void {
  const shape = (d: ImageDataset): string => `${d.channels}x${d.height}x${d.width}`;
  if (shape(train) !== shape(test)) {
    throw new InputError(
      `the training images (${train.source}) are ${shape(train)} (channels x height x width) but the test images (${test.source}) ${shape(test)}; both splits must have one image shape`,
    );
  }
  const differs = Array.from({ length: Math.max(train.classes.length, test.classes.length) }, (_, i) => i).find((i) => train.classes[i] !== test.classes[i]);
  if (differs !== undefined) {
    const name = (d: ImageDataset): string => (differs < d.classes.length ? JSON.stringify(d.classes[differs]) : 'none');
    throw new InputError(
      `the training split (${train.source}) has ${train.classes.length} classes, the test split (${test.source}) ${test.classes.length}, ` +
        `and class ${differs} is ${name(train)} in training, ${name(test)} in test; both splits must have one class list`,
    );
  }
}

/** Throw naming `where` and the first record whose label is outside [0, classCount); a DataFileError when `file` holds the labels. */
export function checkLabelRange(labels: ArrayLike<number>, classCount: number, where: string, file?: string): void {
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i];
    if (label < 0 || label >= classCount) {
      const detail = `${where}: record ${i} has label ${label}, outside 0..${classCount - 1}`;
      throw file === undefined ? new Error(detail) : new DataFileError(file, detail);
    }
  }
}

/**
 * A fixed subset of at most n images, the same for every seed and method (train and test subsets
 * of the quick scales; the float baseline is measured on the same test images as the runs).
 */
export function fixedSubset(ds: ImageDataset, n: number): ImageDataset {
  if (n <= 0 || n >= ds.count) return ds;
  const pick = Rng.derive(SUBSET_TAG, n).permutation(ds.count).subarray(0, n).sort();
  return selectImages(ds, Array.from(pick), ds.split, `${ds.source} (subset of ${n})`);
}

const SUBSET_TAG = 0x5b5e7;
const HOLD_OUT_TAG = 0x401d0;

/**
 * Split a dataset into a training part and a held-out part of about `fraction` of it, class by
 * class (stratified): of each class's n images, round(fraction * n) are held out, picked by a
 * permutation derived from `seed` and the class index, so the same seed always gives the same
 * split. Both parts keep the images' original order and the full class list.
 */
export function holdOut(ds: ImageDataset, fraction: number, seed: number): { train: ImageDataset; heldOut: ImageDataset } {
  if (!(fraction > 0 && fraction < 1)) throw new Error(`held-out fraction must be in (0, 1); got ${fraction}`);
  const held = new Uint8Array(ds.count);
  ds.classes.forEach((_, c) => {
    const members = Array.from(ds.labels.keys()).filter((i) => ds.labels[i] === c);
    const picked = Rng.derive(HOLD_OUT_TAG, seed, c).permutation(members.length).subarray(0, Math.round(fraction * members.length));
    for (const k of picked) held[members[k]] = 1;
  });
  const heldIndices = Array.from(held.keys()).filter((i) => held[i] === 1);
  const trainIndices = Array.from(held.keys()).filter((i) => held[i] === 0);
  if (heldIndices.length === 0 || trainIndices.length === 0) {
    throw new Error(`${ds.source}: a held-out fraction of ${fraction} of ${ds.count} images leaves ${heldIndices.length} held out and ${trainIndices.length} to train on`);
  }
  const where = `held-out ${fraction} (seed ${seed})`;
  return {
    train: selectImages(ds, trainIndices, 'train', `${ds.source} (training part of ${where})`),
    heldOut: selectImages(ds, heldIndices, 'test', `${ds.source} (${where})`),
  };
}

function selectImages(ds: ImageDataset, indices: number[], split: Split, source: string): ImageDataset {
  const size = imageSize(ds);
  const images = allocShared(indices.length * size);
  indices.forEach((src, i) => images.set(ds.images.subarray(src * size, (src + 1) * size), i * size));
  const coarse = ds.coarseLabels;
  return {
    ...ds,
    split,
    images,
    labels: Int32Array.from(indices, (i) => ds.labels[i]),
    count: indices.length,
    source,
    ...(coarse && { coarseLabels: Int32Array.from(indices, (i) => coarse[i]) }),
  };
}
