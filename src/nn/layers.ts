/** Standard layers. Quantized variants live in src/quant and extend Conv2d / Linear. */
import type { Conv2dParams, Pool2dParams } from '../backend/backend.js';
import { checkCeiling, checkPool2dParams } from '../backend/js/validate.js';
import * as ops from '../tensor/ops.js';
import { Tensor } from '../tensor/tensor.js';
import type { Rng } from '../util/rng.js';
import { type Initializer, pytorchDefault } from './init.js';
import { Module, Parameter } from './module.js';

export interface Conv2dOptions {
  readonly stride?: number;
  readonly padding?: number;
  readonly groups?: number;
  readonly bias?: boolean;
  readonly init?: Initializer;
  /** Take over the weight and bias of an existing layer instead of initializing new ones. */
  readonly reuse?: { readonly weight: Parameter; readonly bias: Parameter | null };
}

export class Conv2d extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: number;
  readonly params: Conv2dParams;
  readonly weight: Parameter;
  readonly bias: Parameter | null;

  constructor(inChannels: number, outChannels: number, kernelSize: number, rng: Rng, opts: Conv2dOptions = {}) {
    super();
    const groups = opts.groups ?? 1;
    if (inChannels % groups !== 0 || outChannels % groups !== 0) {
      throw new Error(`Conv2d: ${inChannels} -> ${outChannels} channels are not divisible into ${groups} groups`);
    }
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = kernelSize;
    const stride = opts.stride ?? 1;
    const padding = opts.padding ?? 0;
    this.params = { stride: [stride, stride], padding: [padding, padding], groups };
    const shape = [outChannels, inChannels / groups, kernelSize, kernelSize];
    const fanIn = (inChannels / groups) * kernelSize * kernelSize;
    const fanOut = (outChannels / groups) * kernelSize * kernelSize;
    const init = opts.init ?? pytorchDefault;
    const reuse = opts.reuse;
    this.weight = this.registerParameter('weight', reuse?.weight ?? new Parameter(init(shape, fanIn, fanOut, rng), shape, 'weight'));
    const bias = reuse ? reuse.bias : opts.bias ? new Parameter(pytorchDefault([outChannels], fanIn, fanOut, rng), [outChannels], 'bias') : null;
    this.bias = bias ? this.registerParameter('bias', bias) : null;
  }

  forward(x: Tensor): Tensor {
    return ops.conv2d(x, this.weight, this.bias, this.params);
  }
}

export interface BatchNormOptions {
  readonly eps?: number;
  readonly momentum?: number;
  /** Fuse a ReLU after the normalization. */
  readonly relu?: boolean;
}

/** BatchNorm over dimension 1; works for (N, C) (BatchNorm1d) and (N, C, H, W) (BatchNorm2d). */
export class BatchNorm extends Module {
  readonly channels: number;
  readonly eps: number;
  readonly momentum: number;
  readonly relu: boolean;
  readonly weight: Parameter;
  readonly bias: Parameter;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;

  constructor(channels: number, opts: BatchNormOptions = {}) {
    super();
    this.channels = channels;
    this.eps = opts.eps ?? 1e-5;
    this.momentum = opts.momentum ?? 0.1;
    this.relu = opts.relu ?? false;
    this.weight = this.registerParameter('weight', new Parameter(new Float32Array(channels).fill(1), [channels], 'norm'));
    this.bias = this.registerParameter('bias', new Parameter(new Float32Array(channels), [channels], 'norm'));
    this.runningMean = this.registerBuffer('running_mean', Tensor.zeros([channels]));
    this.runningVar = this.registerBuffer('running_var', Tensor.full([channels], 1));
  }

  forward(x: Tensor): Tensor {
    return ops.batchNorm(x, this.weight, this.bias, this.runningMean, this.runningVar, this.backendParams(x));
  }

  /** The backend op's options for input x, after checking that x has this layer's channels. */
  backendParams(x: Tensor): ops.BatchNormOptions {
    if (x.shape[1] !== this.channels) {
      throw new Error(`BatchNorm: expects ${this.channels} channels, input has shape [${x.shape.join(', ')}]`);
    }
    return { training: this.training, eps: this.eps, momentum: this.momentum, relu: this.relu };
  }
}

export interface LinearOptions {
  readonly bias?: boolean;
  readonly init?: Initializer;
  /** Take over the weight and bias of an existing layer instead of initializing new ones. */
  readonly reuse?: { readonly weight: Parameter; readonly bias: Parameter | null };
}

export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight: Parameter;
  readonly bias: Parameter | null;

  constructor(inFeatures: number, outFeatures: number, rng: Rng, opts: LinearOptions = {}) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const shape = [outFeatures, inFeatures];
    const init = opts.init ?? pytorchDefault;
    const reuse = opts.reuse;
    this.weight = this.registerParameter('weight', reuse?.weight ?? new Parameter(init(shape, inFeatures, outFeatures, rng), shape, 'weight'));
    const bias = reuse
      ? reuse.bias
      : opts.bias === false
        ? null
        : new Parameter(pytorchDefault([outFeatures], inFeatures, outFeatures, rng), [outFeatures], 'bias');
    this.bias = bias ? this.registerParameter('bias', bias) : null;
  }

  forward(x: Tensor): Tensor {
    return ops.linear(x, this.weight, this.bias);
  }
}

export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return ops.relu(x);
  }
}

/** min(max(x, 0), ceiling) (PyTorch's Hardtanh(0, ceiling)); the gradient is 0 at 0 and at the ceiling. */
export class ClippedReLU extends Module {
  constructor(readonly ceiling: number) {
    super();
    checkCeiling(new.target.name, ceiling);
  }

  forward(x: Tensor): Tensor {
    return ops.clippedRelu(x, this.ceiling);
  }
}

/** min(max(x, 0), 6), as torch.nn.ReLU6 (MobileNet). */
export class ReLU6 extends ClippedReLU {
  constructor() {
    super(6);
  }
}

export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}

/** Children named "0", "1", ... applied in order (like torch.nn.Sequential). */
export class Sequential extends Module {
  readonly layers: Module[];

  constructor(...layers: Module[]) {
    super();
    this.layers = layers;
    layers.forEach((m, i) => this.registerModule(String(i), m));
  }

  forward(x: Tensor): Tensor {
    let y = x;
    for (const layer of this.layers) y = layer.call(y);
    return y;
  }

  protected override onModuleReplaced(name: string, m: Module): void {
    this.layers[Number(name)] = m;
  }
}

/** A window extent: one number for both axes, or [height, width]. */
export type Size2 = number | readonly [number, number];

function pair(v: Size2): readonly [number, number] {
  return typeof v === 'number' ? [v, v] : v;
}

/** The backend parameters of a pooling layer, checked so that a bad size names the layer. */
function poolParams(layer: string, kernel: Size2, stride: Size2, padding: Size2): Pool2dParams {
  const p: Pool2dParams = { kernel: pair(kernel), stride: pair(stride), padding: pair(padding) };
  checkPool2dParams(layer, p);
  return p;
}

/** Average pooling, padding counted in the divisor (PyTorch's count_include_pad = true). */
export class AvgPool2d extends Module {
  readonly params: Pool2dParams;

  constructor(kernel: Size2, stride: Size2 = kernel, padding: Size2 = 0) {
    super();
    this.params = poolParams('AvgPool2d', kernel, stride, padding);
  }

  forward(x: Tensor): Tensor {
    return ops.avgPool2d(x, this.params);
  }
}

/** Max pooling (torch.nn.MaxPool2d without dilation or ceil mode): padding never wins. */
export class MaxPool2d extends Module {
  readonly params: Pool2dParams;

  constructor(kernel: Size2, stride: Size2 = kernel, padding: Size2 = 0) {
    super();
    this.params = poolParams('MaxPool2d', kernel, stride, padding);
  }

  forward(x: Tensor): Tensor {
    return ops.maxPool2d(x, this.params);
  }
}

/** Global average pooling and flatten: (N, C, H, W) -> (N, C). */
export class GlobalAvgPool extends Module {
  forward(x: Tensor): Tensor {
    return ops.globalAvgPool(x);
  }
}

export class Flatten extends Module {
  forward(x: Tensor): Tensor {
    return ops.flatten(x);
  }
}

/**
 * The parameter-free "option A" shortcut of the CIFAR ResNets: every second pixel, channels
 * zero-padded equally on both sides.
 */
export class ShortcutPad extends Module {
  constructor(
    readonly stride: number,
    readonly padBefore: number,
    readonly padAfter: number,
  ) {
    super();
  }

  forward(x: Tensor): Tensor {
    return ops.shortcutPad(x, this.stride, this.padBefore, this.padAfter);
  }
}
