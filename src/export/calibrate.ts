/**
 * Calibration pass: the range of every value of the model graph (every node's output), measured by
 * running the fake-quantized model in eval mode on calibration images. The lowering picks the
 * fixed-point scales of the tensors it stores (residual streams, pooled sums, post-training
 * quantized inputs, logits) from these ranges.
 */
import { type Normalization, normalizationTable } from '../data/augment.js';
import { type Graph, runGraph } from '../graph/index.js';
import type { ImageDataset } from '../data/dataset.js';
import { Tensor, noGrad, tidy } from '../tensor/tensor.js';
import { Rng } from '../util/rng.js';

const CALIBRATION_TAG = 0xca11b;

/** Smallest and largest value seen. */
export interface ValueRange {
  min: number;
  max: number;
}

export interface CalibrationRanges {
  readonly images: number;
  /** By graph node id: the range of that node's output. */
  readonly values: readonly ValueRange[];
}

/** Uint8 images, channel planes per image, back to back (the layout of ImageDataset.images). */
export interface CalibrationImages {
  readonly images: Uint8Array;
  readonly count: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
}

/** Normalized float32 images, as the data loader makes them (same lookup table). */
export function normalizeImages(images: Uint8Array, count: number, channels: number, norm: Normalization): Float32Array {
  const table = normalizationTable(norm);
  const out = new Float32Array(images.length);
  const plane = images.length / count / channels;
  for (let i = 0; i < images.length; i++) out[i] = table[Math.floor(i / plane) % channels * 256 + images[i]];
  return out;
}

function widen(r: ValueRange, values: Float32Array): void {
  for (const v of values) {
    if (v < r.min) r.min = v;
    if (v > r.max) r.max = v;
  }
}

/** Run the graph (its model in eval mode) over the images in batches and record every value's range. */
export function calibrationRanges(graph: Graph, data: CalibrationImages, norm: Normalization, batch = 100): CalibrationRanges {
  const { channels, height, width, count } = data;
  const imageSize = channels * height * width;
  const expected = graph.nodes[0].shape;
  if (expected.length !== 3 || expected[0] !== channels || expected[1] !== height || expected[2] !== width) {
    throw new Error(`calibration images are [${channels}, ${height}, ${width}], the traced model takes [${expected.join(', ')}]`);
  }
  if (!(count >= 1) || data.images.length !== count * imageSize) {
    throw new Error(`calibration needs at least one image; ${count} images of [${channels}, ${height}, ${width}] need ${count * imageSize} bytes, got ${data.images.length}`);
  }
  const values = graph.nodes.map((): ValueRange => ({ min: Infinity, max: -Infinity }));
  // The graph's layers run in eval mode (batch-norm running statistics, no quantizer calibration).
  const layers = graph.nodes.flatMap((n) => (n.module ? [n.module] : []));
  const modes = layers.map((m) => m.training);
  layers.forEach((m) => m.eval());
  try {
    for (let start = 0; start < count; start += batch) {
      const n = Math.min(batch, count - start);
      const pixels = data.images.subarray(start * imageSize, (start + n) * imageSize);
      const x = normalizeImages(pixels, n, channels, norm);
      tidy(() => noGrad(() => runGraph(graph, Tensor.fromArray(x, [n, channels, height, width]), { observe: (node, y) => widen(values[node.id], y.toArray()) })));
    }
  } finally {
    layers.forEach((m, i) => m.train(modes[i]));
  }
  return { images: count, values };
}

/** `count` images of a dataset picked by a fixed seeded permutation (the same for every run). */
export function pickImages(data: ImageDataset, count: number, seed = 0): CalibrationImages {
  const n = Math.min(count, data.count);
  const size = data.channels * data.height * data.width;
  const pick = Rng.derive(CALIBRATION_TAG, seed).permutation(data.count).subarray(0, n);
  const images = new Uint8Array(n * size);
  pick.forEach((src, i) => images.set(data.images.subarray(src * size, (src + 1) * size), i * size));
  return { images, count: n, channels: data.channels, height: data.height, width: data.width };
}
