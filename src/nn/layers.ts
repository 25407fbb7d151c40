/** Standard layers. Quantized variants live in src/quant and extend Conv2d / Linear. */
import type { Conv2dParams, Pool2dParams } from '../backend/backend.js';
import { checkCeiling, checkPool2dParams } from '../backend/js/validate.js';
import * as ops from '../tensor/ops.js';
import { Tensor } from '../tensor/tensor.js';
import { type Rng, defaultRng } from '../util/rng.js';
import { type Initializer, pytorchDefault } from './init.js';
import { Module, Parameter } from './module.js';

/** A size along height and width: one number for both, or [h, w]. */
export type SizePair = number | readonly [number, number];

function pairOf(size: SizePair): readonly [number, number] {
  return typeof size === 'number' ? [size, size] : [size[0], size[1]];
}

/** `size` as [h, w], checked to be integers >= min (the error names the layer and the field). */
function toPair(layer: string, field: string, size: SizePair, min: number): readonly [number, number] {
  if (typeof size !== 'number' && size.length !== 2) throw new Error(`${layer}: ${field} must be one number or [h, w], got ${JSON.stringify(size)}`);
  const [h, w] = pairOf(size);
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < min || w < min) {
    throw new Error(`${layer}: ${field} must be integers >= ${min}, got ${JSON.stringify(size)}`);
  }
  return [h, w];
}

export interface Conv2dOptions {
  readonly stride?: SizePair;
  readonly padding?: SizePair;
  readonly groups?: number;
  readonly bias?: boolean;
  readonly init?: Initializer;
  /** Where the initial weights are drawn from (default: the generator `manualSeed` seeds). */
  readonly rng?: Rng;
  /** Take over the weight and bias of an existing layer instead of initializing new ones. */
  readonly reuse?: { readonly weight: Parameter; readonly bias: Parameter | null };
}

/** 2-D convolution; the weight is [outChannels, inChannels / groups, kh, kw]. */
export class Conv2d extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  /** [kh, kw]. */
  readonly kernel: readonly [number, number];
  readonly params: Conv2dParams;
  readonly weight: Parameter;
  readonly bias: Parameter | null;

  constructor(inChannels: number, outChannels: number, kernel: SizePair, opts: Conv2dOptions = {}) {
    super();
    const groups = opts.groups ?? 1;
    if (!Number.isInteger(groups) || groups < 1 || inChannels % groups !== 0 || outChannels % groups !== 0) {
      throw new Error(`Conv2d: ${inChannels} -> ${outChannels} channels are not divisible into ${groups} groups`);
    }
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernel = toPair('Conv2d', 'kernel', kernel, 1);
    this.params = { stride: toPair('Conv2d', 'stride', opts.stride ?? 1, 1), padding: toPair('Conv2d', 'padding', opts.padding ?? 0, 0), groups };
    const [kh, kw] = this.kernel;
    const shape = [outChannels, inChannels / groups, kh, kw];
    const fanIn = (inChannels / groups) * kh * kw;
    const fanOut = (outChannels / groups) * kh * kw;
    const init = opts.init ?? pytorchDefault;
    const rng = opts.rng ?? defaultRng();
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
  /** Where the initial weights are drawn from (default: the generator `manualSeed` seeds). */
  readonly rng?: Rng;
  /** Take over the weight and bias of an existing layer instead of initializing new ones. */
  readonly reuse?: { readonly weight: Parameter; readonly bias: Parameter | null };
}

export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight: Parameter;
  readonly bias: Parameter | null;

  constructor(inFeatures: number, outFeatures: number, opts: LinearOptions = {}) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const shape = [outFeatures, inFeatures];
    const init = opts.init ?? pytorchDefault;
    const rng = opts.rng ?? defaultRng();
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

/**
 * Children applied in order (like torch.nn.Sequential): named "0", "1", ... by the constructor, or
 * by the caller with `Sequential.named` (state-dict names such as `stem.weight`).
 */
export class Sequential extends Module {
  readonly layers: Module[] = [];
  readonly #names: string[] = [];

  constructor(...layers: Module[]) {
    super();
    layers.forEach((m, i) => this.#append(String(i), m));
  }

  /**
   * Children under the given names, applied in the record's order (like
   * torch.nn.Sequential(OrderedDict(...))). Names must not be integers: JavaScript would move them
   * to the front of the record.
   */
  static named(layers: Readonly<Record<string, Module>>): Sequential {
    const s = new Sequential();
    for (const [name, m] of Object.entries(layers)) {
      if (/^(0|[1-9]\d*)$/.test(name) || name === '' || name.includes('.')) {
        throw new Error(`Sequential.named: "${name}" is not a valid layer name (not an integer, no dots)`);
      }
      s.#append(name, m);
    }
    return s;
  }

  /** The children's names, in the order of `layers`. */
  get names(): readonly string[] {
    return this.#names;
  }

  #append(name: string, m: Module): void {
    this.layers.push(m);
    this.#names.push(name);
    this.registerModule(name, m);
  }

  forward(x: Tensor): Tensor {
    let y = x;
    for (const layer of this.layers) y = layer.call(y);
    return y;
  }

  protected override onModuleReplaced(name: string, m: Module): void {
    this.layers[this.#names.indexOf(name)] = m;
  }
}

export interface ResidualOptions {
  /** What the input goes through on the skip path (default: nothing, the identity). */
  readonly shortcut?: Module;
  /** Apply a ReLU after the sum (default false). */
  readonly relu?: boolean;
}

/**
 * A residual branch: body(x) + shortcut(x), or relu(body(x) + shortcut(x)) with `relu`; the
 * sub-modules are named `body` and `shortcut` in the state dict.
 */
export class Residual extends Module {
  readonly relu: boolean;
  #body: Module;
  #shortcut: Module | null;

  constructor(body: Module, opts: ResidualOptions = {}) {
    super();
    this.#body = this.registerModule('body', body);
    this.#shortcut = opts.shortcut ? this.registerModule('shortcut', opts.shortcut) : null;
    this.relu = opts.relu ?? false;
  }

  get body(): Module {
    return this.#body;
  }

  /** The skip path's module, or null for the identity. */
  get shortcut(): Module | null {
    return this.#shortcut;
  }

  forward(x: Tensor): Tensor {
    const y = this.#body.call(x);
    const skip = this.#shortcut ? this.#shortcut.call(x) : x;
    return this.relu ? ops.addRelu(y, skip) : ops.add(y, skip);
  }

  // Quantization swaps a direct child (a bare Conv2d body or shortcut) for its quantized version.
  protected override onModuleReplaced(name: string, m: Module): void {
    if (name === 'body') this.#body = m;
    if (name === 'shortcut') this.#shortcut = m;
  }
}

function poolParams(layer: string, kernel: SizePair, stride: SizePair, padding: SizePair): Pool2dParams {
  const p: Pool2dParams = { kernel: pairOf(kernel), stride: pairOf(stride), padding: pairOf(padding) };
  checkPool2dParams(layer, p);
  return p;
}

/** A window pooling layer: its backend parameters, checked so that a bad size names the layer. */
abstract class Pool2d extends Module {
  readonly params: Pool2dParams;

  constructor(kernel: SizePair, stride: SizePair = kernel, padding: SizePair = 0) {
    super();
    this.params = poolParams(this.constructor.name, kernel, stride, padding);
  }
}

/** Average pooling, padding counted in the divisor (PyTorch's count_include_pad = true). */
export class AvgPool2d extends Pool2d {
  forward(x: Tensor): Tensor {
    return ops.avgPool2d(x, this.params);
  }
}

/** Max pooling (torch.nn.MaxPool2d without dilation or ceil mode): padding never wins. */
export class MaxPool2d extends Pool2d {
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
