/**
 * Shared fixtures of the export tests (no tests here): tiny quantized ResNets with batch-norm
 * statistics from synthetic images, their lowered integer models, and run directories of tiny
 * calibrated checkpoints for the export commands.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Normalization } from '../src/data/augment.js';
import { CIFAR10_CLASSES } from '../src/data/cifar.js';
import type { CalibrationImages } from '../src/export/calibrate.js';
import { normalizeImages } from '../src/export/calibrate.js';
import type { IntegerModel } from '../src/export/ir.js';
import { type LowerOptions, lowerModel } from '../src/export/lower.js';
import { ResNet, type ShortcutOption } from '../src/models/resnet.js';
import { type FirstLastPolicy, calibrate, quantize, quantizedLayers } from '../src/quant/quantize.js';
import type { MethodName } from '../src/quant/quantizer.js';
import { Tensor, noGrad, tidy } from '../src/tensor/tensor.js';
import { saveCheckpoint } from '../src/train/checkpoint.js';
import { resolveConfig } from '../src/train/config.js';
import { buildModel } from '../src/train/trainer.js';
import { Rng } from '../src/util/rng.js';

export const NORMALIZATION: Normalization = { mean: [0.491, 0.482, 0.447], std: [0.247, 0.243, 0.262] };
export const CLASSES = Array.from({ length: 10 }, (_, i) => `class${i}`);

/** Images with smooth structure plus noise, so convolutions see correlated pixels. */
export function syntheticImages(count: number, channels: number, height: number, width: number, seed: number): CalibrationImages {
  const rng = new Rng(seed);
  const images = new Uint8Array(count * channels * height * width);
  for (let n = 0; n < count; n++) {
    const [fy, fx, phase] = [rng.next() * 0.6, rng.next() * 0.6, rng.next() * 6];
    for (let c = 0; c < channels; c++) {
      const base = 60 + 120 * rng.next();
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const v = base + 70 * Math.sin(fy * y + fx * x + phase + c) + 25 * rng.normal();
          images[((n * channels + c) * height + y) * width + x] = Math.max(0, Math.min(255, Math.round(v)));
        }
      }
    }
  }
  return { images, count, channels, height, width };
}

export interface TinyOptions {
  readonly method: MethodName;
  readonly wbits: number;
  readonly abits?: number;
  readonly firstLast?: FirstLastPolicy;
  readonly shortcut?: ShortcutOption;
  readonly headBatchNorm?: boolean;
  readonly perChannel?: boolean;
  readonly seed?: number;
}

export interface TinyModel {
  readonly model: ResNet;
  readonly images: CalibrationImages;
}

/**
 * A 3-stage, one-block-per-stage ResNet (widths 8/16/32) on 16x16 images, quantized, with
 * quantizers initialized and batch-norm statistics (random affine parameters, some negative
 * scales) from synthetic images; APoT and PACT activation clips set to 2 so every level is used.
 */
export function tinyQuantizedModel(o: TinyOptions): TinyModel {
  const seed = o.seed ?? 1;
  const model = new ResNet({
    blocks: [1, 1, 1],
    widths: [8, 16, 32],
    numClasses: CLASSES.length,
    inChannels: 3,
    shortcut: o.shortcut ?? 'A',
    headBatchNorm: o.headBatchNorm ?? false,
    init: 'kaiming-normal-fan-in',
    seed,
  });
  quantize(model, { method: o.method, wbits: o.wbits, abits: o.abits ?? o.wbits, firstLast: o.firstLast ?? 'int8', perChannel: o.perChannel });
  const rng = Rng.derive(seed, 77);
  for (const [name, p] of model.namedParameters()) {
    if (/bn\d?\.weight$|shortcut\.1\.weight$/.test(name)) p.assign(Float32Array.from({ length: p.size }, () => (rng.next() < 0.1 ? -0.5 : 0.5 + rng.next())));
    if (/bn\d?\.bias$|shortcut\.1\.bias$/.test(name)) p.assign(Float32Array.from({ length: p.size }, () => 0.3 * rng.normal()));
  }
  for (const [, layer] of quantizedLayers(model)) {
    const aq = layer.actQuantizer as { method: string; alpha?: Tensor } | null;
    if (aq?.alpha && (aq.method === 'apot' || aq.method === 'pact')) aq.alpha.assign(Float32Array.of(2));
  }
  const images = syntheticImages(32, 3, 16, 16, seed);
  const shape = [images.count, 3, 16, 16];
  const x = normalizeImages(images.images, images.count, 3, NORMALIZATION);
  calibrate(model, x, shape);
  model.train();
  for (let pass = 0; pass < 3; pass++) tidy(() => noGrad(() => model.call(Tensor.fromArray(x, shape))));
  model.eval();
  return { model, images };
}

export type LoweringChoices = Partial<Pick<LowerOptions, 'residualBits' | 'inputBits' | 'residualHeadroom' | 'warn'>>;

/** Lower a tiny model with its own images as calibration data. */
export function lowerTiny(t: TinyModel, o: TinyOptions, choices: LoweringChoices = {}): IntegerModel {
  return lowerModel(t.model, {
    normalization: NORMALIZATION,
    calibration: t.images,
    meta: { model: 'tiny', method: o.method, wbits: o.wbits, abits: o.abits ?? o.wbits, firstLast: o.firstLast ?? 'int8', classes: CLASSES },
    ...choices,
  });
}

/**
 * A run directory `dir/name` holding a `last` checkpoint of a resnet8 configured by `fields` (a
 * tinyquant train config), its quantizers calibrated and its batch-norm statistics gathered over
 * `passes` train-mode passes on `count` synthetic images: what `tinyquant export` reads.
 */
export function calibratedRun(dir: string, name: string, fields: Record<string, unknown>, count = 16, passes = 2): string {
  const config = resolveConfig({ model: 'resnet8', dataset: 'cifar10', dataDir: dir, normalization: 'apot', ...fields });
  const { model } = buildModel(config, { classes: CIFAR10_CLASSES, channels: 3 });
  const shape = [count, 3, 32, 32];
  const x = normalizeImages(syntheticImages(count, 3, 32, 32, 4).images, count, 3, NORMALIZATION);
  if (config.method !== 'float') calibrate(model, x, shape);
  model.train();
  for (let pass = 0; pass < passes; pass++) tidy(() => noGrad(() => model.call(Tensor.fromArray(x, shape))));
  const run = join(dir, name);
  mkdirSync(run);
  const progress = { epoch: 1, step: 0, partial: { lossSum: 0, correct: 0, count: 0 }, bestTop1: 0, bestEpoch: 0, hessianEpoch: -1 };
  saveCheckpoint(run, 'last', model, null, { config, progress, metrics: {} });
  return run;
}

/** Run a command with console.log and console.error silenced (the CLI's progress lines). */
export async function quietly(run: () => Promise<void>): Promise<void> {
  const [log, error] = [console.log, console.error];
  console.log = console.error = () => {};
  try {
    await run();
  } finally {
    [console.log, console.error] = [log, error];
  }
}
