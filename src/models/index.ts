/**
 * Model registry: every architecture a config or the CLI can name, with the input it is designed
 * for (so the CLI and experiment grids can feed any model).
 */
import type { Module } from '../nn/module.js';
import { Rng } from '../util/rng.js';
import { dsCnn } from './dscnn.js';
import { mobileNetV1 } from './mobilenetv1.js';
import { ResNet, type ResNetConfig } from './resnet.js';
import { resnet8Mlperf } from './resnet8-mlperf.js';
import type { ZooModelOptions } from './zoo-blocks.js';

export { BasicBlock, ResNet, type ResNetConfig, type ShortcutOption } from './resnet.js';
export { dsCnn } from './dscnn.js';
export { type MobileNetV1Options, mobileNetV1 } from './mobilenetv1.js';
export { resnet8Mlperf } from './resnet8-mlperf.js';
export type { ZooModelOptions } from './zoo-blocks.js';

type Architecture = Omit<ResNetConfig, 'numClasses' | 'inChannels' | 'seed'>;

function cifarResNet(depth: number, overrides: Partial<Architecture> = {}): Architecture {
  const n = (depth - 2) / 6;
  return {
    blocks: [n, n, n],
    widths: [16, 32, 64],
    shortcut: 'A',
    headBatchNorm: false,
    init: 'kaiming-normal-fan-in',
    ...overrides,
  };
}

/** What a registry entry's factory is given: every option resolved. */
export type ResolvedModelOptions = Required<ModelOptions>;

export interface ModelEntry {
  readonly create: (opts: ResolvedModelOptions) => Module;
  /** The input the model is designed for, [channels, height, width]. */
  readonly inputShape: readonly [number, number, number];
  readonly numClasses: number;
}

const CIFAR_INPUT = [3, 32, 32] as const;

function resnetEntry(architecture: Architecture): ModelEntry {
  return { create: (opts) => new ResNet({ ...architecture, ...opts }), inputShape: CIFAR_INPUT, numClasses: 10 };
}

/** A zoo model's entry: its constructor function drawing from the seed's generator. */
function zooEntry(make: (opts: ZooModelOptions) => Module, inputShape: readonly [number, number, number], numClasses: number): ModelEntry {
  return { create: ({ numClasses: n, inChannels, seed }) => make({ numClasses: n, inChannels, rng: new Rng(seed) }), inputShape, numClasses };
}

/**
 * `resnetNN`: He et al.'s CIFAR ResNet (depth 6n + 2) with option-A shortcuts (the canonical one,
 * used for fair comparisons; ResNet-8 is the smallest, for tests and the tiniest devices); `-apot` and `-ewgs` are the exact variants of the two reference implementations
 * (option-B 1x1 projection shortcuts; option A plus BatchNorm1d before the classifier).
 * `resnet8-mlperf`, `dscnn` and `mobilenetv1-0.25` are MLPerf Tiny's image-classification,
 * keyword-spotting and visual-wake-words references.
 */
export const models = {
  resnet8: resnetEntry(cifarResNet(8)),
  resnet20: resnetEntry(cifarResNet(20)),
  resnet32: resnetEntry(cifarResNet(32)),
  resnet44: resnetEntry(cifarResNet(44)),
  resnet56: resnetEntry(cifarResNet(56)),
  'resnet20-apot': resnetEntry(cifarResNet(20, { shortcut: 'B', init: 'kaiming-normal-fan-out' })),
  'resnet56-apot': resnetEntry(cifarResNet(56, { shortcut: 'B', init: 'kaiming-normal-fan-out' })),
  'resnet20-ewgs': resnetEntry(cifarResNet(20, { headBatchNorm: true })),
  resnet18: resnetEntry({ blocks: [2, 2, 2, 2], widths: [64, 128, 256, 512], shortcut: 'B', headBatchNorm: false, init: 'kaiming-normal-fan-in' }),
  'resnet8-mlperf': zooEntry(resnet8Mlperf, CIFAR_INPUT, 10),
  dscnn: zooEntry(dsCnn, [1, 49, 10], 12),
  'mobilenetv1-0.25': zooEntry((o) => mobileNetV1({ ...o, alpha: 0.25 }), [3, 96, 96], 2),
} as const satisfies Record<string, ModelEntry>;

export type ModelName = keyof typeof models;

export const modelNames = Object.keys(models) as ModelName[];

export interface ModelOptions {
  /** Default: the model's own (`models[name].numClasses`). */
  readonly numClasses?: number;
  /** Default: the model's own (`models[name].inputShape[0]`). */
  readonly inChannels?: number;
  readonly seed?: number;
}

export function isModelName(name: string): name is ModelName {
  return name in models;
}

export function createModel(name: string, opts: ModelOptions = {}): Module {
  if (!isModelName(name)) throw new Error(`unknown model "${name}"; choose one of ${modelNames.join(', ')}`);
  const entry: ModelEntry = models[name];
  return entry.create({
    numClasses: opts.numClasses ?? entry.numClasses,
    inChannels: opts.inChannels ?? entry.inputShape[0],
    seed: opts.seed ?? 0,
  });
}
