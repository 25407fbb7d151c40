/**
 * Batches for training and evaluation. Batches are made on worker threads (the dataset is shared
 * with them once through a SharedArrayBuffer; each finished batch is transferred back, not copied)
 * and prefetched ahead of the consumer, who sees how long it waited for each (`waitMs`).
 *
 * Everything random is a function of (seed, epoch, position in the epoch's order): the epoch order
 * is `Rng.derive(seed, SHUFFLE_TAG, epoch).permutation(count)`, and each sample's augmentation is
 * derived from its position, so batches do not depend on the worker count and an epoch can resume
 * at any step.
 */

import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Rng } from '../util/rng.js';
import {
  AugmentWorkerState,
  defaultNormalization,
  normalizationTable,
  resolveNormalization,
  SHUFFLE_TAG,
  type AugmentSetup,
  type AugmentSpec,
  type AugmentTask,
  type Normalization,
  type NormalizationPreset,
} from './augment.js';
import { allocShared, validateDataset, type ImageDataset } from './dataset.js';
import { WorkerPool } from './worker-pool.js';

export interface LoaderOptions {
  batchSize: number;
  /** Seed for shuffling and augmentation (default 0). */
  seed?: number;
  /** Shuffle each epoch (default true). */
  shuffle?: boolean;
  /** Random crop / flip; null or absent for none. */
  augment?: AugmentSpec | null;
  /** Default: {@link defaultNormalization} for the dataset. */
  normalization?: NormalizationPreset | Normalization;
  /** Drop the last batch when it is smaller than batchSize (default false: keep it). */
  dropLast?: boolean;
  /** Worker threads making batches; 0 makes them on the calling thread when asked for (default 1). */
  workers?: number;
  /** Batches prepared ahead of the one being consumed (default 4; ignored with 0 workers). */
  prefetch?: number;
}

export interface Batch {
  /** size x channels x height x width, normalized (NCHW). */
  images: Float32Array;
  labels: Int32Array;
  /** Dataset index of each sample. */
  indices: Uint32Array;
  size: number;
  channels: number;
  height: number;
  width: number;
  /** Step within the epoch (0-based). */
  index: number;
  epoch: number;
  /** Milliseconds the consumer waited for this batch after asking for it. */
  waitMs: number;
}

export class DataLoader {
  readonly dataset: ImageDataset;
  readonly batchSize: number;
  readonly seed: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly normalization: Normalization;
  readonly augment: AugmentSpec | null;
  readonly stepsPerEpoch: number;
  readonly #prefetch: number;
  readonly #pool?: WorkerPool;
  readonly #inline?: AugmentWorkerState;

  constructor(dataset: ImageDataset, options: LoaderOptions) {
    validateDataset(dataset);
    const { batchSize } = options;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`data loader: batchSize must be a positive integer, got ${batchSize}`);
    const workers = options.workers ?? 1;
    if (!Number.isInteger(workers) || workers < 0) throw new Error(`data loader: workers must be an integer >= 0, got ${workers}`);
    if (options.augment && !(Number.isInteger(options.augment.cropPadding) && options.augment.cropPadding >= 0)) {
      throw new Error(`data loader: cropPadding must be an integer >= 0, got ${options.augment.cropPadding}`);
    }
    this.dataset = dataset;
    this.batchSize = batchSize;
    this.seed = options.seed ?? 0;
    this.shuffle = options.shuffle ?? true;
    this.dropLast = options.dropLast ?? false;
    this.augment = options.augment ?? null;
    this.normalization = resolveNormalization(
      options.normalization ?? defaultNormalization(dataset.name, dataset.channels),
      dataset.channels,
    );
    this.stepsPerEpoch = this.dropLast ? Math.floor(dataset.count / batchSize) : Math.ceil(dataset.count / batchSize);
    this.#prefetch = workers === 0 ? 0 : Math.max(1, options.prefetch ?? 4);
    const setup: AugmentSetup = {
      images: dataset.images.buffer instanceof SharedArrayBuffer ? dataset.images : copyToShared(dataset.images),
      count: dataset.count,
      channels: dataset.channels,
      height: dataset.height,
      width: dataset.width,
      table: normalizationTable(this.normalization),
      augment: this.augment,
      seed: this.seed,
    };
    if (workers > 0) this.#pool = new WorkerPool('augment', workers, setup);
    else this.#inline = new AugmentWorkerState(setup);
  }

  /** The order samples are visited in during `epoch`. */
  order(epoch: number): Uint32Array {
    if (this.shuffle) return Rng.derive(this.seed, SHUFFLE_TAG, epoch).permutation(this.dataset.count);
    return Uint32Array.from({ length: this.dataset.count }, (_, i) => i);
  }

  /** sha256 (hex) of the epoch's order as little-endian uint32s: equal hashes, equal data order. */
  orderHash(epoch: number): string {
    const order = this.order(epoch);
    const bytes = Buffer.alloc(order.length * 4);
    order.forEach((v, i) => bytes.writeUInt32LE(v, i * 4));
    return createHash('sha256').update(bytes).digest('hex');
  }

  /** The batches of one epoch from `startStep` on (for resuming), in order. */
  epoch(epoch: number, startStep = 0): AsyncGenerator<Batch> {
    if (!Number.isInteger(epoch) || epoch < 0) throw new Error(`data loader: epoch must be an integer >= 0, got ${epoch}`);
    if (!Number.isInteger(startStep) || startStep < 0 || startStep > this.stepsPerEpoch) {
      throw new Error(`data loader: startStep ${startStep} outside 0..${this.stepsPerEpoch}`);
    }
    return this.#batches(epoch, startStep);
  }

  async *#batches(epoch: number, startStep: number): AsyncGenerator<Batch> {
    const order = this.order(epoch);
    const inFlight = new Map<number, Promise<Float32Array>>();
    try {
      for (let step = startStep; step < this.stepsPerEpoch; step++) {
        const asked = performance.now();
        const images = await this.#images(epoch, step, order, inFlight);
        yield this.#batch(epoch, step, order, images, performance.now() - asked);
      }
    } finally {
      inFlight.clear(); // abandoned batches finish in their workers and are dropped
    }
  }

  /** Step's images: made now without workers, else awaited after queueing the next `prefetch` steps. */
  #images(
    epoch: number,
    step: number,
    order: Uint32Array,
    inFlight: Map<number, Promise<Float32Array>>,
  ): Float32Array | Promise<Float32Array> {
    if (this.#inline) return this.#inline.run(this.#task(epoch, step, order));
    for (let ahead = step; ahead <= Math.min(this.stepsPerEpoch - 1, step + this.#prefetch); ahead++) {
      if (!inFlight.has(ahead)) inFlight.set(ahead, this.#make(epoch, ahead, order));
    }
    const images = inFlight.get(step) as Promise<Float32Array>;
    inFlight.delete(step);
    return images;
  }

  #task(epoch: number, step: number, order: Uint32Array): AugmentTask {
    const first = step * this.batchSize;
    return { epoch, firstPosition: first, indices: order.slice(first, Math.min(first + this.batchSize, order.length)) };
  }

  #make(epoch: number, step: number, order: Uint32Array): Promise<Float32Array> {
    const made = (this.#pool as WorkerPool)
      .run<ArrayBuffer>(this.#task(epoch, step, order))
      .then(
        (buffer) => new Float32Array(buffer),
        (err: Error) => {
          throw new Error(`data loader: epoch ${epoch} step ${step}: ${err.message}`);
        },
      );
    made.catch(() => undefined); // rejection is reported when the batch is awaited
    return made;
  }

  #batch(epoch: number, step: number, order: Uint32Array, images: Float32Array, waitMs: number): Batch {
    const { indices } = this.#task(epoch, step, order);
    const labels = Int32Array.from(indices, (i) => this.dataset.labels[i]);
    const { channels, height, width } = this.dataset;
    return { images, labels, indices, size: indices.length, channels, height, width, index: step, epoch, waitMs };
  }

  /** Stop the workers. The loader cannot be used afterwards. */
  async close(): Promise<void> {
    await this.#pool?.close();
  }
}

function copyToShared(images: Uint8Array): Uint8Array {
  const shared = allocShared(images.length);
  shared.set(images);
  return shared;
}

/** An evaluation loader: dataset order, no augmentation, all samples (last batch kept). */
export function createEvalLoader(
  dataset: ImageDataset,
  options: Pick<LoaderOptions, 'batchSize' | 'normalization' | 'workers' | 'prefetch'>,
): DataLoader {
  return new DataLoader(dataset, { ...options, shuffle: false, augment: null, dropLast: false });
}
