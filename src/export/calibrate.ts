/**
 * Ranges of the float tensors the integer model stores in fixed point (the residual stream after
 * the stem and after each block, the classifier's input, the logits), measured by running the
 * fake-quantized model in eval mode on calibration images. The lowering picks the int16 (or int8)
 * scales of those tensors from these ranges.
 */
import { type Normalization, normalizationTable } from '../data/augment.js';
import type { ResNet } from '../models/resnet.js';
import type { Module } from '../nn/module.js';
import { Tensor, noGrad, tidy } from '../tensor/tensor.js';

/** Smallest and largest value seen. */
export interface ValueRange {
  min: number;
  max: number;
}

export interface CalibrationRanges {
  readonly images: number;
  /** Output of the stem (conv1, bn1, ReLU). */
  readonly stem: ValueRange;
  /** Output of each block, in network order. */
  readonly blocks: ValueRange[];
  /** Input of the classifier (pooled features, after the head batch norm if any). */
  readonly classifierInput: ValueRange;
  readonly logits: ValueRange;
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

/** Temporarily wrap `m.call` so `observe` sees its input and output values. */
function tap(m: Module, observe: (input: Tensor, output: Tensor) => void): () => void {
  const call = m.call;
  m.call = (x: Tensor): Tensor => {
    const y = call.call(m, x);
    observe(x, y);
    return y;
  };
  return () => {
    m.call = call;
  };
}

const emptyRange = (): ValueRange => ({ min: Infinity, max: -Infinity });

/** Run the model (eval mode) over the images in batches and record the ranges. */
export function calibrationRanges(model: ResNet, data: CalibrationImages, norm: Normalization, batch = 100): CalibrationRanges {
  const { channels, height, width, count } = data;
  const imageSize = channels * height * width;
  if (channels !== model.config.inChannels) throw new Error(`calibration images have ${channels} channels, the model takes ${model.config.inChannels}`);
  if (!(count >= 1) || data.images.length !== count * imageSize) {
    throw new Error(`calibration needs at least one image; ${count} images of [${channels}, ${height}, ${width}] need ${count * imageSize} bytes, got ${data.images.length}`);
  }
  const ranges = { images: count, stem: emptyRange(), blocks: model.blocks().map(emptyRange), classifierInput: emptyRange(), logits: emptyRange() };
  const untap = [
    tap(model.bn1, (_, y) => widen(ranges.stem, y.toArray())),
    ...model.blocks().map((b, i) => tap(b, (_, y) => widen(ranges.blocks[i], y.toArray()))),
    tap(model.linear, (x, y) => {
      widen(ranges.classifierInput, x.toArray());
      widen(ranges.logits, y.toArray());
    }),
  ];
  const wasTraining = model.training;
  model.eval();
  try {
    for (let start = 0; start < count; start += batch) {
      const n = Math.min(batch, count - start);
      const pixels = data.images.subarray(start * imageSize, (start + n) * imageSize);
      const x = normalizeImages(pixels, n, channels, norm);
      tidy(() => noGrad(() => model.call(Tensor.fromArray(x, [n, channels, height, width]))));
    }
  } finally {
    untap.forEach((u) => u());
    model.train(wasTraining);
  }
  return ranges;
}
