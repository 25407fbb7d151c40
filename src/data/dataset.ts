/**
 * The in-memory dataset shape every reader produces: all images of one split as one planar
 * uint8 block (N x C x H x W, channel planes per image, the CIFAR binary layout), labels as int32.
 */
import { Rng } from '../util/rng.js';

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

/** Throw naming `where` and the first record whose label is outside [0, classCount). */
export function checkLabelRange(labels: ArrayLike<number>, classCount: number, where: string): void {
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i];
    if (label < 0 || label >= classCount) {
      throw new Error(`${where}: record ${i} has label ${label}, outside 0..${classCount - 1}`);
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
  const size = imageSize(ds);
  const images = new Uint8Array(n * size);
  pick.forEach((src, i) => images.set(ds.images.subarray(src * size, (src + 1) * size), i * size));
  return { ...ds, images, labels: Int32Array.from(pick, (i) => ds.labels[i]), count: n, source: `${ds.source} (subset of ${n})` };
}

const SUBSET_TAG = 0x5b5e7;
