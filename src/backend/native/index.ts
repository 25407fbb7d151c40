/**
 * The native backend: a Node-API addon over oneDNN (see native/). Activations stay in oneDNN's
 * blocked layouts between ops; `download` returns logical row-major values. The addon validates
 * every argument and throws errors naming the op and the shapes; parameter objects (optimizer
 * settings, quantizer specs) are also checked here with the js backend's validators, so both
 * backends accept exactly the same values.
 */
import type {
  AdamParams,
  Backend,
  BatchNormParams,
  Conv2dParams,
  CrossEntropyResult,
  Pool2dParams,
  QuantSpec,
  SgdParams,
  Shape,
} from '../backend.js';
import { checkAdamParams, checkBatchNormParams, checkCeiling, checkQuantSpec, checkSgdParams } from '../js/validate.js';
import {
  type Addon,
  type AddonContext,
  type AddonLoad,
  type BatchNormArgs,
  type ConvArgs,
  type NativeBuf,
  type NativeSaved,
  type PoolArgs,
  loadAddon,
} from './addon.js';

export type { NativeBuf, NativeSaved } from './addon.js';

/** The shape of a buffer that should be native (checked before TypeScript-side validation reads it). */
function shapeOf(op: string, name: string, x: NativeBuf): Shape {
  if (typeof x !== 'object' || x === null || x.backend !== 'native') throw new Error(`${op}: ${name} is not a native backend buffer`);
  return x.shape;
}

function convArgs(p: Conv2dParams): ConvArgs {
  return [p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.groups];
}

function poolArgs(p: Pool2dParams): PoolArgs {
  return [p.kernel[0], p.kernel[1], p.stride[0], p.stride[1], p.padding[0], p.padding[1]];
}

function batchNormArgs(op: string, p: BatchNormParams): BatchNormArgs {
  checkBatchNormParams(op, p);
  return [p.eps, p.momentum, p.relu];
}

export class NativeBackend implements Backend<NativeBuf, NativeSaved> {
  readonly name = 'native';
  readonly threads: number;
  readonly #addon: Addon;
  readonly #ctx: AddonContext;

  /** `threads` 0 means all cores. */
  constructor(addon: Addon, threads: number) {
    if (!Number.isInteger(threads) || threads < 0) throw new Error(`native backend: threads must be a non-negative integer, got ${threads}`);
    this.#addon = addon;
    this.#ctx = new addon.Context(threads);
    this.threads = this.#ctx.threads;
  }

  /** Physical layout of a buffer in oneDNN notation ("abcd" = plain NCHW, "aBcd16b" = nChw16c). */
  layoutOf(x: NativeBuf): string {
    return this.#addon.layoutOf(x);
  }

  get onednnVersion(): string {
    return this.#addon.onednnVersion;
  }

  // ---- memory -----------------------------------------------------------------------------
  upload(data: Float32Array, shape: Shape): NativeBuf {
    return this.#ctx.upload(data, shape);
  }
  download(x: NativeBuf): Float32Array {
    return this.#ctx.download(x);
  }
  zeros(shape: Shape): NativeBuf {
    return this.#ctx.zeros(shape);
  }
  clone(x: NativeBuf): NativeBuf {
    return this.#ctx.clone(x);
  }
  free(x: NativeBuf): void {
    this.#ctx.free(x);
  }
  freeSaved(s: NativeSaved): void {
    this.#ctx.freeSaved(s);
  }
  reshape(x: NativeBuf, shape: Shape): NativeBuf {
    return this.#ctx.reshape(x, shape);
  }
  liveBytes(): number {
    return this.#addon.liveBytes();
  }

  // ---- elementwise and reductions -------------------------------------------------------------
  add(a: NativeBuf, b: NativeBuf): NativeBuf {
    return this.#ctx.add(a, b);
  }
  addRelu(a: NativeBuf, b: NativeBuf): NativeBuf {
    return this.#ctx.addRelu(a, b);
  }
  affine(x: NativeBuf, alpha: number, beta: number): NativeBuf {
    return this.#ctx.affine(x, alpha, beta);
  }
  mul(a: NativeBuf, b: NativeBuf): NativeBuf {
    return this.#ctx.mul(a, b);
  }
  relu(x: NativeBuf): NativeBuf {
    return this.#ctx.relu(x);
  }
  reluBackward(gy: NativeBuf, y: NativeBuf): NativeBuf {
    return this.#ctx.reluBackward(gy, y);
  }
  clippedRelu(x: NativeBuf, ceiling: number): NativeBuf {
    checkCeiling('clippedRelu', ceiling);
    return this.#ctx.clippedRelu(x, ceiling);
  }
  clippedReluBackward(gy: NativeBuf, y: NativeBuf, ceiling: number): NativeBuf {
    checkCeiling('clippedReluBackward', ceiling);
    return this.#ctx.clippedReluBackward(gy, y, ceiling);
  }
  tanh(x: NativeBuf): NativeBuf {
    return this.#ctx.tanh(x);
  }
  tanhBackward(gy: NativeBuf, y: NativeBuf): NativeBuf {
    return this.#ctx.tanhBackward(gy, y);
  }
  axpyInPlace(dst: NativeBuf, src: NativeBuf, alpha: number): void {
    this.#ctx.axpyInPlace(dst, src, alpha);
  }
  dot(a: NativeBuf, b: NativeBuf): number {
    return this.#ctx.dot(a, b);
  }
  stats(x: NativeBuf, channels: number): Float64Array {
    return this.#ctx.stats(x, channels);
  }
  countNonFinite(x: NativeBuf): number {
    return this.#ctx.countNonFinite(x);
  }

  // ---- convolution ----------------------------------------------------------------------------
  conv2d(x: NativeBuf, w: NativeBuf, bias: NativeBuf | null, p: Conv2dParams): NativeBuf {
    return this.#ctx.conv2d(x, w, bias, ...convArgs(p));
  }
  conv2dBackwardData(gy: NativeBuf, w: NativeBuf, xShape: Shape, p: Conv2dParams): NativeBuf {
    return this.#ctx.conv2dBackwardData(gy, w, xShape, ...convArgs(p));
  }
  conv2dBackwardWeights(
    gy: NativeBuf, x: NativeBuf, wShape: Shape, withBias: boolean, p: Conv2dParams,
  ): { gw: NativeBuf; gb: NativeBuf | null } {
    const [gw, gb] = this.#ctx.conv2dBackwardWeights(gy, x, wShape, withBias, ...convArgs(p));
    return { gw, gb };
  }

  // ---- batch normalization ----------------------------------------------------------------------
  batchNormTrain(
    x: NativeBuf, gamma: NativeBuf, beta: NativeBuf, runningMean: NativeBuf, runningVar: NativeBuf, p: BatchNormParams,
  ): { y: NativeBuf; saved: NativeSaved } {
    const [y, saved] = this.#ctx.batchNormTrain(x, gamma, beta, runningMean, runningVar, ...batchNormArgs('batchNormTrain', p));
    return { y, saved };
  }
  batchNormInfer(
    x: NativeBuf, gamma: NativeBuf, beta: NativeBuf, runningMean: NativeBuf, runningVar: NativeBuf, p: BatchNormParams,
  ): NativeBuf {
    return this.#ctx.batchNormInfer(x, gamma, beta, runningMean, runningVar, ...batchNormArgs('batchNormInfer', p));
  }
  /** `y` is not needed: the fused ReLU's mask is kept in `saved`. */
  batchNormBackward(
    gy: NativeBuf, x: NativeBuf, _y: NativeBuf, gamma: NativeBuf, saved: NativeSaved, p: BatchNormParams,
  ): { gx: NativeBuf; gGamma: NativeBuf; gBeta: NativeBuf } {
    const [gx, gGamma, gBeta] = this.#ctx.batchNormBackward(gy, x, gamma, saved, ...batchNormArgs('batchNormBackward', p));
    return { gx, gGamma, gBeta };
  }

  batchNormQuantizeTrain(
    x: NativeBuf, gamma: NativeBuf, beta: NativeBuf, runningMean: NativeBuf, runningVar: NativeBuf, p: BatchNormParams, spec: QuantSpec,
  ): { y: NativeBuf; saved: NativeSaved } {
    const op = 'batchNormQuantizeTrain';
    checkQuantSpec(op, shapeOf(op, 'x', x), spec);
    const [y, saved] = this.#ctx.batchNormQuantizeTrain(x, gamma, beta, runningMean, runningVar, ...batchNormArgs(op, p), spec);
    return { y, saved };
  }
  batchNormQuantizeBackward(
    gq: NativeBuf, x: NativeBuf, gamma: NativeBuf, beta: NativeBuf, saved: NativeSaved, p: BatchNormParams, spec: QuantSpec,
  ): { gx: NativeBuf; gGamma: NativeBuf; gBeta: NativeBuf; sums: Float64Array } {
    const op = 'batchNormQuantizeBackward';
    checkQuantSpec(op, shapeOf(op, 'x', x), spec);
    const [gx, gGamma, gBeta, sums] = this.#ctx.batchNormQuantizeBackward(gq, x, gamma, beta, saved, ...batchNormArgs(op, p), spec);
    return { gx, gGamma, gBeta, sums };
  }

  // ---- pooling ------------------------------------------------------------------------------
  avgPool2d(x: NativeBuf, p: Pool2dParams): NativeBuf {
    return this.#ctx.avgPool2d(x, ...poolArgs(p));
  }
  avgPool2dBackward(gy: NativeBuf, xShape: Shape, p: Pool2dParams): NativeBuf {
    return this.#ctx.avgPool2dBackward(gy, xShape, ...poolArgs(p));
  }
  maxPool2d(x: NativeBuf, p: Pool2dParams): NativeBuf {
    return this.#ctx.maxPool2d(x, ...poolArgs(p));
  }
  maxPool2dBackward(gy: NativeBuf, x: NativeBuf, p: Pool2dParams): NativeBuf {
    return this.#ctx.maxPool2dBackward(gy, x, ...poolArgs(p));
  }
  globalAvgPool(x: NativeBuf): NativeBuf {
    return this.#ctx.globalAvgPool(x);
  }
  globalAvgPoolBackward(gy: NativeBuf, xShape: Shape): NativeBuf {
    return this.#ctx.globalAvgPoolBackward(gy, xShape);
  }

  // ---- fully connected -------------------------------------------------------------------------
  linear(x: NativeBuf, w: NativeBuf, bias: NativeBuf | null): NativeBuf {
    return this.#ctx.linear(x, w, bias);
  }
  linearBackwardData(gy: NativeBuf, w: NativeBuf): NativeBuf {
    return this.#ctx.linearBackwardData(gy, w);
  }
  linearBackwardWeights(gy: NativeBuf, x: NativeBuf, withBias: boolean): { gw: NativeBuf; gb: NativeBuf | null } {
    const [gw, gb] = this.#ctx.linearBackwardWeights(gy, x, withBias);
    return { gw, gb };
  }

  // ---- ResNet option-A shortcut ----------------------------------------------------------------
  shortcutPad(x: NativeBuf, stride: number, padBefore: number, padAfter: number): NativeBuf {
    return this.#ctx.shortcutPad(x, stride, padBefore, padAfter);
  }
  shortcutPadBackward(gy: NativeBuf, xShape: Shape, stride: number, padBefore: number): NativeBuf {
    return this.#ctx.shortcutPadBackward(gy, xShape, stride, padBefore);
  }

  // ---- loss -----------------------------------------------------------------------------------
  softmaxCrossEntropy(logits: NativeBuf, labels: Int32Array, smoothing: number): CrossEntropyResult & { probs: NativeBuf } {
    const [loss, probs, correct] = this.#ctx.softmaxCrossEntropy(logits, labels, smoothing);
    return { loss, probs, correct };
  }
  softmaxCrossEntropyBackward(probs: NativeBuf, labels: Int32Array, smoothing: number, scale: number): NativeBuf {
    return this.#ctx.softmaxCrossEntropyBackward(probs, labels, smoothing, scale);
  }

  // ---- optimizers -----------------------------------------------------------------------------
  sgdStep(param: NativeBuf, grad: NativeBuf, momentumBuf: NativeBuf | null, p: SgdParams): void {
    checkSgdParams('sgdStep', p, momentumBuf !== null);
    this.#ctx.sgdStep(param, grad, momentumBuf, p.lr, p.momentum, p.dampening, p.weightDecay, p.nesterov);
  }
  adamStep(param: NativeBuf, grad: NativeBuf, m: NativeBuf, v: NativeBuf, p: AdamParams): void {
    checkAdamParams('adamStep', p);
    this.#ctx.adamStep(param, grad, m, v, p.lr, p.beta1, p.beta2, p.eps, p.weightDecay, p.decoupled, p.step);
  }

  // ---- quantization ---------------------------------------------------------------------------
  quantize(x: NativeBuf, spec: QuantSpec): NativeBuf {
    checkQuantSpec('quantize', shapeOf('quantize', 'x', x), spec);
    return this.#ctx.quantize(x, spec);
  }
  addReluQuantize(a: NativeBuf, b: NativeBuf, spec: QuantSpec): { y: NativeBuf; q: NativeBuf } {
    checkQuantSpec('addReluQuantize', shapeOf('addReluQuantize', 'a', a), spec);
    const [y, q] = this.#ctx.addReluQuantize(a, b, spec);
    return { y, q };
  }
  quantizeBackward(x: NativeBuf, gy: NativeBuf, spec: QuantSpec, accumulate?: NativeBuf): { gx: NativeBuf; sums: Float64Array } {
    checkQuantSpec('quantizeBackward', shapeOf('quantizeBackward', 'x', x), spec);
    const [gx, sums] = this.#ctx.quantizeBackward(x, gy, spec, accumulate ?? null);
    return { gx, sums };
  }
}

let loaded: AddonLoad | undefined;

function addonLoad(): AddonLoad {
  loaded ??= loadAddon();
  return loaded;
}

/** A native backend with `threads` OpenMP threads (0 = all cores), or null when the addon is unavailable. */
export function loadNativeBackend(threads: number): NativeBackend | null {
  const load = addonLoad();
  return 'addon' in load ? new NativeBackend(load.addon, threads) : null;
}

/** Why `loadNativeBackend` returns null and the command that fixes it; null when the addon is available. */
export function nativeUnavailable(): { readonly reason: string; readonly fix: string } | null {
  const load = addonLoad();
  return 'reason' in load ? load : null;
}
