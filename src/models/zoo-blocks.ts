/**
 * Building blocks shared by the MLPerf Tiny models, made of the public layers only. Like the Keras
 * references, every convolution has a bias (Keras' default), even before a batch norm, and batch
 * norms have Keras' defaults (epsilon 1e-3, moving averages with momentum 0.99, i.e. PyTorch's 0.01).
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
export function referenceConv(inChannels: number, outChannels: number, kernel: SizePair, rng: Rng | undefined, opts: Conv2dOptions = {}): Conv2d {
  return new Conv2d(inChannels, outChannels, kernel, { bias: true, init: kaimingNormalFanIn, rng, ...opts });
}

/** A batch norm with the Keras references' defaults, optionally followed by a (fused) ReLU. */
export function referenceBatchNorm(channels: number, relu: boolean): BatchNorm {
  return new BatchNorm(channels, { eps: 1e-3, momentum: 0.01, relu });
}

/**
 * A depthwise-separable block: depthwise 3x3 (stride `stride`, padding 1) + BN + ReLU, pointwise
 * 1x1 to `outChannels` + BN + ReLU. Children: `0` depthwise conv, `1` its BN, `2` pointwise conv,
 * `3` its BN.
 */
export function depthwiseSeparable(inChannels: number, outChannels: number, stride: number, rng: Rng | undefined): Sequential {
  return new Sequential(
    referenceConv(inChannels, inChannels, 3, rng, { stride, padding: 1, groups: inChannels }),
    referenceBatchNorm(inChannels, true),
    referenceConv(inChannels, outChannels, 1, rng),
    referenceBatchNorm(outChannels, true),
  );
}
