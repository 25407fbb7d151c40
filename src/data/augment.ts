/**
 * Training-time augmentation and normalization, as torchvision's
 * `RandomCrop(size, padding=p)` + `RandomHorizontalFlip()` + `ToTensor()` + `Normalize(mean, std)`:
 * padding pixels are 0 in pixel space and are normalized like any other pixel.
 *
 * Every random decision for a sample comes from `Rng.derive(seed, AUGMENT_TAG, epoch, position)`,
 * position being the sample's place in the epoch's order, so a batch is the same whichever worker
 * (or the main thread) makes it.
 */

import { Rng } from '../util/rng.js';

/** Stream tags for `Rng.derive`: epoch shuffling and per-sample augmentation. */
export const SHUFFLE_TAG = 0x53485546; // 'SHUF'
export const AUGMENT_TAG = 0x41554731; // 'AUG1'

/** Per-channel normalization of pixel/255: (x - mean[c]) / std[c]. */
export interface Normalization {
  mean: readonly number[];
  std: readonly number[];
}

export type NormalizationPreset = 'apot' | 'ewgs' | 'imagenet-style' | 'mnist' | 'fashion-mnist' | 'none';

const PRESETS: Record<Exclude<NormalizationPreset, 'none'>, Normalization> = {
  /** CIFAR-10 statistics as used by the APoT reference code. */
  apot: { mean: [0.491, 0.482, 0.447], std: [0.247, 0.243, 0.262] },
  /** The constants used by the EWGS reference code (and many CIFAR repositories). */
  ewgs: { mean: [0.4914, 0.4822, 0.4465], std: [0.2023, 0.1994, 0.201] },
  'imagenet-style': { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
  mnist: { mean: [0.1307], std: [0.3081] },
  'fashion-mnist': { mean: [0.286], std: [0.353] },
};

export const NORMALIZATION_PRESETS: readonly NormalizationPreset[] = [...Object.keys(PRESETS), 'none'] as NormalizationPreset[];

/** Resolve a preset or explicit constants for `channels` channels ('none' leaves pixel/255). */
export function resolveNormalization(spec: NormalizationPreset | Normalization, channels: number): Normalization {
  if (spec === 'none') return { mean: new Array(channels).fill(0), std: new Array(channels).fill(1) };
  const norm = typeof spec === 'string' ? PRESETS[spec] : spec;
  if (!norm) throw new Error(`unknown normalization preset '${spec}' (known: ${NORMALIZATION_PRESETS.join(', ')})`);
  const name = typeof spec === 'string' ? `normalization '${spec}'` : 'normalization';
  if (norm.mean.length !== channels || norm.std.length !== channels) {
    throw new Error(`${name} has ${norm.mean.length} means and ${norm.std.length} stds, the data has ${channels} channels`);
  }
  norm.std.forEach((s, c) => {
    if (!(s > 0)) throw new Error(`${name}: std of channel ${c} must be positive, got ${s}`);
  });
  return norm;
}

/** The usual normalization for a dataset: APoT's constants for colour data, dataset statistics for MNIST-likes. */
export function defaultNormalization(datasetName: string, channels: number): NormalizationPreset {
  if (datasetName === 'mnist' || datasetName === 'fashion-mnist') return datasetName;
  return channels === 3 ? 'apot' : 'none';
}

/** Random crop back to the original size after zero padding, and random horizontal flip. */
export interface AugmentSpec {
  /** Pixels of zero padding on each side before the crop; 0 disables cropping. */
  cropPadding: number;
  horizontalFlip: boolean;
}

/** The standard CIFAR training augmentation: crop with 4-pixel padding, horizontal flip. */
export const CIFAR_AUGMENT: AugmentSpec = { cropPadding: 4, horizontalFlip: true };

/** The usual training augmentation: CIFAR's crop + flip for the CIFAR datasets, none otherwise. */
export function defaultAugment(datasetName: string): AugmentSpec | null {
  return datasetName === 'cifar10' || datasetName === 'cifar100' ? CIFAR_AUGMENT : null;
}

/** One sample's random choices: the crop window's shift from centre and the flip. */
export interface SampleAugmentation {
  dy: number;
  dx: number;
  flip: boolean;
}

export function sampleAugmentation(seed: number, epoch: number, position: number, spec: AugmentSpec): SampleAugmentation {
  const rng = Rng.derive(seed, AUGMENT_TAG, epoch, position);
  const p = spec.cropPadding;
  const dy = p > 0 ? rng.int(2 * p + 1) - p : 0;
  const dx = p > 0 ? rng.int(2 * p + 1) - p : 0;
  const flip = spec.horizontalFlip ? rng.next() < 0.5 : false;
  return { dy, dx, flip };
}

/** Lookup table value[c * 256 + pixel] = (pixel / 255 - mean[c]) / std[c], in float32. */
export function normalizationTable(norm: Normalization): Float32Array {
  const table = new Float32Array(256 * norm.mean.length);
  for (let c = 0; c < norm.mean.length; c++) {
    for (let v = 0; v < 256; v++) table[c * 256 + v] = (v / 255 - norm.mean[c]) / norm.std[c];
  }
  return table;
}

export interface ImageShape {
  channels: number;
  height: number;
  width: number;
}

/**
 * Write one planar uint8 image into `out` (float32, planar) at `outOffset`, shifted by (dy, dx),
 * optionally mirrored, normalized through `table`. Output pixel (y, x) reads source pixel
 * (y + dy, x + dx) of the unmirrored crop; outside the source it is the padding value (pixel 0).
 */
export function transformImage(
  src: Uint8Array,
  srcOffset: number,
  shape: ImageShape,
  table: Float32Array,
  aug: SampleAugmentation,
  out: Float32Array,
  outOffset: number,
): void {
  const { channels, height: h, width: w } = shape;
  for (let c = 0; c < channels; c++) {
    const lut = c * 256;
    const pad = table[lut];
    const plane = srcOffset + c * h * w;
    for (let y = 0; y < h; y++) {
      const sy = y + aug.dy;
      const row = outOffset + (c * h + y) * w;
      if (sy < 0 || sy >= h) {
        out.fill(pad, row, row + w);
        continue;
      }
      const srcRow = plane + sy * w;
      for (let x = 0; x < w; x++) {
        const sx = (aug.flip ? w - 1 - x : x) + aug.dx;
        out[row + x] = sx < 0 || sx >= w ? pad : table[lut + src[srcRow + sx]];
      }
    }
  }
}

/** What an augmentation worker is given once. */
export interface AugmentSetup extends ImageShape {
  /** The dataset's images; backed by a SharedArrayBuffer so it is shared, not copied. */
  images: Uint8Array;
  count: number;
  table: Float32Array;
  augment: AugmentSpec | null;
  seed: number;
}

/** One batch to make: samples at positions firstPosition.. of the epoch's order. */
export interface AugmentTask {
  epoch: number;
  firstPosition: number;
  indices: Uint32Array;
}

const NO_AUGMENTATION: SampleAugmentation = { dy: 0, dx: 0, flip: false };

/** Makes batches from a setup; used inside workers and, with 0 workers, on the main thread. */
export class AugmentWorkerState {
  readonly #setup: AugmentSetup;

  constructor(setup: AugmentSetup) {
    this.#setup = setup;
  }

  run(task: AugmentTask): Float32Array {
    const s = this.#setup;
    const size = s.channels * s.height * s.width;
    const out = new Float32Array(task.indices.length * size);
    task.indices.forEach((index, i) => {
      if (index >= s.count) throw new Error(`sample index ${index} out of range: the dataset has ${s.count} images`);
      const aug = s.augment ? sampleAugmentation(s.seed, task.epoch, task.firstPosition + i, s.augment) : NO_AUGMENTATION;
      transformImage(s.images, index * size, s, s.table, aug, out, i * size);
    });
    return out;
  }
}
