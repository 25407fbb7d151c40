/**
 * Building blocks shared by the MLPerf Tiny models, made of the public layers only. Like the Keras
 * references, every convolution has a bias (Keras' default), even before a batch norm. Batch norms
 * keep tinyquant's (PyTorch's) defaults, epsilon 1e-5 and momentum 0.1, not Keras' 1e-3 and 0.99
 * (0.01 in PyTorch's terms): running statistics that settle within the short runs of a study.
 * Keras' 'same' padding of a stride-2 layer pads one more row and column below and right than
 * above and left; the symmetric paddings here give the same output sizes.
 */
import { kaimingNormalFanIn } from '../nn/init.js';
import { BatchNorm, Conv2d, type Conv2dOptions, Sequential, type SizePair } from '../nn/layers.js';
import type { Rng } from '../util/rng.js';

/** What every zoo model's constructor function takes. */
export interface ZooModelOptions {
  readonly numClasses?: number;
  readonly inChannels?: number;
  /** Where the initial weights are drawn from (default: the generator `manualSeed` seeds). */
  readonly rng?: Rng;
}

/** A convolution as the references draw it: he_normal weights (N(0, 2 / fan_in)), with a bias. */
export function referenceConv(inChannels: number, outChannels: number, kernel: SizePair, opts: Conv2dOptions): Conv2d {
  return new Conv2d(inChannels, outChannels, kernel, { bias: true, init: kaimingNormalFanIn, ...opts });
}

/**
 * A depthwise-separable block: depthwise 3x3 (stride `stride`, padding 1) + BN + ReLU, pointwise
 * 1x1 to `outChannels` + BN + ReLU. Children: `0` depthwise conv, `1` its BN, `2` pointwise conv,
 * `3` its BN.
 */
export function depthwiseSeparable(inChannels: number, outChannels: number, stride: number, rng: Rng | undefined): Sequential {
  return new Sequential(
    referenceConv(inChannels, inChannels, 3, { rng, stride, padding: 1, groups: inChannels }),
    new BatchNorm(inChannels, { relu: true }),
    referenceConv(inChannels, outChannels, 1, { rng }),
    new BatchNorm(outChannels, { relu: true }),
  );
}
