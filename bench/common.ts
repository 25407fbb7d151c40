/**
 * What the benchmark scripts share: running a measurement in a fresh process, PyTorch's side,
 * medians, a model's MACs, and the calibrated (untrained) integer models of the device benchmarks.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Normalization } from '../src/data/augment.js';
import type { ImageDataset } from '../src/data/dataset.js';
import type { CalibrationImages } from '../src/export/calibrate.js';
import { lowerUntrainedModel } from '../src/export/checkpoint-model.js';
import { type IntegerModel, tensorSize } from '../src/export/ir.js';
import { type ModelName, createModel } from '../src/models/index.js';
import { quantize } from '../src/quant/quantize.js';
import type { MethodName } from '../src/quant/quantizer.js';
import { readWeights } from '../src/train/checkpoint.js';

/** The tinyquant CLI (compiled), for measurements in a fresh process. */
export const TINYQUANT_CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** Debian's python3 has python3-torch; a python3 earlier on PATH (pyenv) may not. */
export const PYTHON = process.env.TINYQUANT_PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');

/** The PyTorch side of the comparisons (same model, batch, loss and optimizer as `tinyquant bench train`). */
export const TORCH_BENCH = fileURLToPath(new URL('../../bench/torch_bench.py', import.meta.url));

/** The last line a measurement printed, parsed as JSON (the lines before it are progress). */
export function lastJsonLine<T>(stdout: string): T {
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as T;
}

/** Run a command to completion (stderr passes through) and parse the last line it printed. */
export function runJson<T>(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): T {
  return lastJsonLine<T>(execFileSync(cmd, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Multiply-accumulates of one inference: every conv's output elements times its window (input channels per group x kernel). */
export function convMacs(model: IntegerModel): number {
  return model.ops.reduce((s, op) => (op.kind === 'conv' ? s + tensorSize(model.tensors[op.output]) * (op.inChannels / op.groups) * op.kernel[0] * op.kernel[1] : s), 0);
}

/** The test images the device benchmarks calibrate on: [5000, 5256), none of the images they run. */
export const CALIBRATION = { start: 5000, images: 256 } as const;

/** Images [start, start + count) of a dataset, with their labels. */
export function datasetSlice(data: ImageDataset, start: number, count: number): CalibrationImages & { labels: Int32Array } {
  const { channels, height, width } = data;
  const size = channels * height * width;
  const n = Math.min(count, data.count - start);
  return { images: data.images.subarray(start * size, (start + n) * size), labels: data.labels.subarray(start, start + n), count: n, channels, height, width };
}

export interface CalibratedModelOptions {
  readonly model: ModelName;
  readonly method: MethodName;
  /** W = A bits (first and last layers int8). */
  readonly bits: number;
  /** Float weights to start from (safetensors), or random weights. */
  readonly floatFile?: string;
  readonly normalization: Normalization;
  readonly residualBits: 8 | 16;
  readonly inputBits: 8 | 16;
}

/** A registry model quantized at W = A = bits and lowered untrained, its quantizers calibrated on CALIBRATION's images of `test`. */
export function calibratedModel(o: CalibratedModelOptions, test: ImageDataset): IntegerModel {
  const net = createModel(o.model);
  if (o.floatFile) net.loadStateDict(readWeights(o.floatFile), { source: o.floatFile });
  quantize(net, { method: o.method, wbits: o.bits, abits: o.bits, firstLast: 'int8' });
  return lowerUntrainedModel(net, {
    normalization: o.normalization,
    residualBits: o.residualBits,
    inputBits: o.inputBits,
    calibration: datasetSlice(test, CALIBRATION.start, CALIBRATION.images),
    meta: { model: o.model, method: o.method, wbits: o.bits, abits: o.bits, firstLast: 'int8', classes: test.classes },
  });
}
