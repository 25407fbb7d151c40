/**
 * Argument validation for backend ops, written over shapes and plain parameters only, so every
 * backend can share it. Each check throws an Error that names the op and the shapes involved, e.g.
 * `conv2d: weight [16, 3, 3, 3] expects 3 input channels per group, input is [8, 4, 32, 32]`.
 * Functions that validate an op's inputs return what the op needs next (output shape, geometry).
 */
import type {
  AdamParams,
  BatchNormParams,
  Conv2dParams,
  Pool2dParams,
  QuantSpec,
  SgdParams,
  Shape,
} from '../backend.js';
import { numel, outSize, sameShape, shapeStr } from '../backend.js';

export function fail(op: string, message: string): never {
  throw new Error(`${op}: ${message}`);
}

function isNonNegativeInt(v: number): boolean {
  return Number.isInteger(v) && v >= 0;
}

function isPositiveInt(v: number): boolean {
  return Number.isInteger(v) && v > 0;
}

/** Every dimension is a non-negative integer. */
export function checkShape(op: string, what: string, shape: Shape): void {
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInt)) {
    fail(op, `${what} shape ${Array.isArray(shape) ? shapeStr(shape) : String(shape)} must list non-negative integers`);
  }
}

export function expectRank(op: string, what: string, shape: Shape, ...ranks: number[]): void {
  if (!ranks.includes(shape.length)) {
    const expected = ranks.map((r) => `${r}`).join(' or ');
    fail(op, `${what} must have ${expected} dimensions, got ${shapeStr(shape)}`);
  }
}

export function expectSameShape(op: string, whatA: string, a: Shape, whatB: string, b: Shape): void {
  if (!sameShape(a, b)) fail(op, `${whatA} ${shapeStr(a)} and ${whatB} ${shapeStr(b)} must have the same shape`);
}

export function expectShape(op: string, what: string, actual: Shape, expected: Shape): void {
  if (!sameShape(actual, expected)) fail(op, `${what} must be ${shapeStr(expected)}, got ${shapeStr(actual)}`);
}

export function expectFinite(op: string, what: string, v: number): void {
  if (!Number.isFinite(v)) fail(op, `${what} must be a finite number, got ${v}`);
}

/** A clipped ReLU's ceiling: positive and finite as a float32 (the precision both backends clip at). */
export function checkCeiling(op: string, ceiling: number): void {
  const c = Math.fround(ceiling);
  if (!(Number.isFinite(c) && c > 0)) fail(op, `ceiling must be a positive finite number, got ${ceiling}`);
}

function expectInRange(op: string, what: string, v: number, lo: number, hi: number, hiInclusive: boolean): void {
  const ok = v >= lo && (hiInclusive ? v <= hi : v < hi);
  if (!ok) fail(op, `${what} must be in [${lo}, ${hi}${hiInclusive ? ']' : ')'}, got ${v}`);
}

function expectPair(op: string, what: string, pair: readonly number[], min: number): void {
  if (pair.length !== 2 || !pair.every((v) => Number.isInteger(v) && v >= min)) {
    fail(op, `${what} must be two integers >= ${min}, got [${pair.join(', ')}]`);
  }
}

/** Dimension 0 split into `channels` equal contiguous chunks; returns the chunk length. */
export function channelChunk(op: string, what: string, shape: Shape, channels: number): number {
  if (!isPositiveInt(channels)) fail(op, `channels must be a positive integer, got ${channels}`);
  if (shape.length === 0) fail(op, `${what} ${shapeStr(shape)} has no dimension 0 to split into channels`);
  if (shape[0] % channels !== 0) {
    fail(op, `dimension 0 of ${what} ${shapeStr(shape)} does not split into ${channels} channels`);
  }
  return numel(shape) / channels;
}

// ---- convolution ----------------------------------------------------------------------------

/** Everything a convolution kernel needs to know about its operands. */
export interface ConvGeometry {
  readonly batch: number;
  readonly inChannels: number;
  readonly inH: number;
  readonly inW: number;
  readonly outChannels: number;
  readonly kernelH: number;
  readonly kernelW: number;
  readonly outH: number;
  readonly outW: number;
  readonly strideH: number;
  readonly strideW: number;
  readonly padH: number;
  readonly padW: number;
  readonly groups: number;
  /** Input channels per group (the weight's dimension 1). */
  readonly groupInChannels: number;
  /** Output channels per group. */
  readonly groupOutChannels: number;
}

function checkConv2dParams(op: string, p: Conv2dParams): void {
  expectPair(op, 'stride', p.stride, 1);
  expectPair(op, 'padding', p.padding, 0);
  if (!isPositiveInt(p.groups)) fail(op, `groups must be a positive integer, got ${p.groups}`);
}

/** Validates a convolution of input `x` with weight `w` and returns its geometry. */
export function conv2dGeometry(op: string, x: Shape, w: Shape, p: Conv2dParams): ConvGeometry {
  checkConv2dParams(op, p);
  expectRank(op, 'input', x, 4);
  expectRank(op, 'weight', w, 4);
  const [batch, inChannels, inH, inW] = x;
  const [outChannels, groupInChannels, kernelH, kernelW] = w;
  const { groups } = p;
  if (inChannels % groups !== 0 || outChannels % groups !== 0) {
    fail(op, `groups ${groups} must divide the input channels (input ${shapeStr(x)}) and the output channels (weight ${shapeStr(w)})`);
  }
  if (groupInChannels * groups !== inChannels) {
    fail(op, `weight ${shapeStr(w)} expects ${groupInChannels} input channels per group, input is ${shapeStr(x)}` +
      (groups > 1 ? ` (${groups} groups)` : ''));
  }
  if (kernelH < 1 || kernelW < 1) fail(op, `weight ${shapeStr(w)} has an empty kernel`);
  const [strideH, strideW] = p.stride;
  const [padH, padW] = p.padding;
  if (inH + 2 * padH < kernelH || inW + 2 * padW < kernelW) {
    fail(op, `kernel ${kernelH}x${kernelW} is larger than the padded input ${shapeStr(x)} (padding [${padH}, ${padW}])`);
  }
  return {
    batch, inChannels, inH, inW, outChannels, kernelH, kernelW,
    outH: outSize(inH, kernelH, strideH, padH),
    outW: outSize(inW, kernelW, strideW, padW),
    strideH, strideW, padH, padW, groups, groupInChannels,
    groupOutChannels: outChannels / groups,
  };
}

export function convOutputShape(g: ConvGeometry): Shape {
  return [g.batch, g.outChannels, g.outH, g.outW];
}

export function checkBias(op: string, bias: Shape | null, channels: number): void {
  if (bias !== null) expectShape(op, 'bias', bias, [channels]);
}

/** Validates the upstream gradient of a convolution against the shapes of its forward pass. */
export function conv2dBackwardGeometry(op: string, gy: Shape, x: Shape, w: Shape, p: Conv2dParams): ConvGeometry {
  const geometry = conv2dGeometry(op, x, w, p);
  expectShape(op, `gradient of the output of input ${shapeStr(x)} * weight ${shapeStr(w)}`, gy, convOutputShape(geometry));
  return geometry;
}

// ---- batch normalization ---------------------------------------------------------------------

export interface BatchNormGeometry {
  readonly batch: number;
  readonly channels: number;
  /** Elements per (sample, channel): H * W, or 1 for (N, C). */
  readonly spatial: number;
}

export function checkBatchNormParams(op: string, p: BatchNormParams): void {
  if (!(Number.isFinite(p.eps) && p.eps >= 0)) fail(op, `eps must be a finite number >= 0, got ${p.eps}`);
  expectInRange(op, 'momentum', p.momentum, 0, 1, true);
}

/** Validates x (N, C) or (N, C, H, W) against the per-channel vectors. */
export function batchNormGeometry(op: string, x: Shape, channelVectors: Record<string, Shape>): BatchNormGeometry {
  expectRank(op, 'input', x, 2, 4);
  const channels = x[1];
  for (const [what, shape] of Object.entries(channelVectors)) {
    if (!sameShape(shape, [channels])) {
      fail(op, `${what} ${shapeStr(shape)} does not match the ${channels} channels of input ${shapeStr(x)}`);
    }
  }
  return { batch: x[0], channels, spatial: x.length === 4 ? x[2] * x[3] : 1 };
}

/** Training needs more than one value per channel (unbiased variance, as in PyTorch). */
export function checkBatchNormTrainable(op: string, x: Shape, g: BatchNormGeometry): void {
  if (g.batch * g.spatial < 2) fail(op, `expected more than 1 value per channel in training, input is ${shapeStr(x)}`);
}

// ---- pooling ---------------------------------------------------------------------------------

export interface PoolGeometry {
  readonly batch: number;
  readonly channels: number;
  readonly inH: number;
  readonly inW: number;
  readonly outH: number;
  readonly outW: number;
  readonly kernelH: number;
  readonly kernelW: number;
  readonly strideH: number;
  readonly strideW: number;
  readonly padH: number;
  readonly padW: number;
}

/** Kernel and stride pairs of positive integers, padding of non-negative ones up to half the kernel. */
export function checkPool2dParams(op: string, p: Pool2dParams): void {
  expectPair(op, 'kernel', p.kernel, 1);
  expectPair(op, 'stride', p.stride, 1);
  expectPair(op, 'padding', p.padding, 0);
  const [kernelH, kernelW] = p.kernel;
  const [padH, padW] = p.padding;
  // PyTorch's rule; it also guarantees that every window overlaps the input.
  if (2 * padH > kernelH || 2 * padW > kernelW) {
    fail(op, `padding [${padH}, ${padW}] must be at most half of kernel [${kernelH}, ${kernelW}]`);
  }
}

export function pool2dGeometry(op: string, x: Shape, p: Pool2dParams): PoolGeometry {
  checkPool2dParams(op, p);
  expectRank(op, 'input', x, 4);
  const [kernelH, kernelW] = p.kernel;
  const [padH, padW] = p.padding;
  const [batch, channels, inH, inW] = x;
  if (inH + 2 * padH < kernelH || inW + 2 * padW < kernelW) {
    fail(op, `kernel [${kernelH}, ${kernelW}] is larger than the padded input ${shapeStr(x)}`);
  }
  return {
    batch, channels, inH, inW,
    outH: outSize(inH, kernelH, p.stride[0], padH),
    outW: outSize(inW, kernelW, p.stride[1], padW),
    kernelH, kernelW, strideH: p.stride[0], strideW: p.stride[1], padH, padW,
  };
}

export function poolOutputShape(g: PoolGeometry): Shape {
  return [g.batch, g.channels, g.outH, g.outW];
}

// ---- fully connected -------------------------------------------------------------------------

/** x (N, K) and w (M, K); returns [N, K, M]. */
export function linearDims(op: string, x: Shape, w: Shape): [n: number, k: number, m: number] {
  expectRank(op, 'input', x, 2);
  expectRank(op, 'weight', w, 2);
  if (x[1] !== w[1]) fail(op, `weight ${shapeStr(w)} expects ${w[1]} input features, input is ${shapeStr(x)}`);
  return [x[0], x[1], w[0]];
}

// ---- ResNet option-A shortcut ------------------------------------------------------------------

export function checkShortcutParams(op: string, stride: number, padBefore: number, padAfter: number): void {
  if (!isPositiveInt(stride)) fail(op, `stride must be a positive integer, got ${stride}`);
  if (!isNonNegativeInt(padBefore) || !isNonNegativeInt(padAfter)) {
    fail(op, `channel padding must be non-negative integers, got before ${padBefore}, after ${padAfter}`);
  }
}

export function shortcutPadShape(op: string, x: Shape, stride: number, padBefore: number, padAfter: number): Shape {
  checkShortcutParams(op, stride, padBefore, padAfter);
  expectRank(op, 'input', x, 4);
  const [n, c, h, w] = x;
  return [n, padBefore + c + padAfter, Math.ceil(h / stride), Math.ceil(w / stride)];
}

/** Validates the gradient of a shortcut and returns the `padAfter` it implies. */
export function shortcutPadAfter(op: string, gy: Shape, x: Shape, stride: number, padBefore: number): number {
  expectRank(op, 'gradient', gy, 4);
  const padAfter = gy[1] - padBefore - (x[1] ?? 0);
  const expected = shortcutPadShape(op, x, stride, padBefore, Math.max(padAfter, 0));
  if (padAfter < 0 || !sameShape(gy, expected)) {
    fail(op, `gradient ${shapeStr(gy)} does not fit input ${shapeStr(x)} with stride ${stride} and ${padBefore} channels padded before`);
  }
  return padAfter;
}

// ---- loss ------------------------------------------------------------------------------------

/** logits (N, C) against N integer labels in [0, C). Returns [N, C]. */
export function checkClassification(op: string, logits: Shape, labels: Int32Array, smoothing: number): [n: number, c: number] {
  expectRank(op, 'logits', logits, 2);
  const [n, c] = logits;
  if (!(labels instanceof Int32Array)) fail(op, 'labels must be an Int32Array');
  if (labels.length !== n) fail(op, `${labels.length} labels for logits ${shapeStr(logits)}`);
  if (n < 1 || c < 1) fail(op, `logits ${shapeStr(logits)} must have at least one row and one class`);
  for (let i = 0; i < n; i++) {
    if (labels[i] < 0 || labels[i] >= c) fail(op, `label ${labels[i]} of row ${i} is outside [0, ${c}) for logits ${shapeStr(logits)}`);
  }
  expectInRange(op, 'label smoothing', smoothing, 0, 1, true);
  return [n, c];
}

// ---- optimizers ------------------------------------------------------------------------------

export function checkSgdParams(op: string, p: SgdParams, hasMomentumBuffer: boolean): void {
  for (const key of ['lr', 'momentum', 'dampening', 'weightDecay'] as const) expectFinite(op, key, p[key]);
  if (p.lr < 0) fail(op, `lr must be >= 0, got ${p.lr}`);
  if (p.momentum < 0) fail(op, `momentum must be >= 0, got ${p.momentum}`);
  if (p.weightDecay < 0) fail(op, `weightDecay must be >= 0, got ${p.weightDecay}`);
  if (p.nesterov && (p.momentum <= 0 || p.dampening !== 0)) {
    fail(op, `Nesterov momentum requires momentum > 0 and dampening 0, got momentum ${p.momentum}, dampening ${p.dampening}`);
  }
  if (p.momentum > 0 && !hasMomentumBuffer) fail(op, `momentum ${p.momentum} needs a momentum buffer, got null`);
}

export function checkAdamParams(op: string, p: AdamParams): void {
  for (const key of ['lr', 'beta1', 'beta2', 'eps', 'weightDecay'] as const) expectFinite(op, key, p[key]);
  if (p.lr < 0) fail(op, `lr must be >= 0, got ${p.lr}`);
  expectInRange(op, 'beta1', p.beta1, 0, 1, false);
  expectInRange(op, 'beta2', p.beta2, 0, 1, false);
  if (p.eps < 0) fail(op, `eps must be >= 0, got ${p.eps}`);
  if (p.weightDecay < 0) fail(op, `weightDecay must be >= 0, got ${p.weightDecay}`);
  if (!isPositiveInt(p.step)) fail(op, `step must be a positive integer (1-based), got ${p.step}`);
}

// ---- quantization ----------------------------------------------------------------------------

/** Validates a QuantSpec for tensor shape `x`; returns the number of elements per channel. */
export function checkQuantSpec(op: string, x: Shape, spec: QuantSpec): number {
  const chunk = channelChunk(op, 'input', x, spec.channels);
  for (const key of ['scale', 'offset', 'outScale', 'outOffset'] as const) {
    const values = spec[key];
    if (!(values instanceof Float32Array) || values.length !== spec.channels) {
      fail(op, `spec.${key} must be a Float32Array of ${spec.channels} values (one per channel), got ${values?.length ?? values}`);
    }
    for (let c = 0; c < values.length; c++) {
      if (!Number.isFinite(values[c])) fail(op, `spec.${key}[${c}] is ${values[c]}`);
      if (key === 'scale' && values[c] === 0) fail(op, `spec.scale[${c}] is 0`);
    }
  }
  if (Number.isNaN(spec.lo) || Number.isNaN(spec.hi) || !(spec.lo < spec.hi)) {
    fail(op, `spec.lo ${spec.lo} must be below spec.hi ${spec.hi}`);
  }
  if (spec.levels !== null) {
    const levels = spec.levels;
    if (!(levels instanceof Float32Array) || levels.length === 0) fail(op, 'spec.levels must be a non-empty Float32Array or null');
    for (let i = 0; i < levels.length; i++) {
      if (!Number.isFinite(levels[i]) || (i > 0 && !(levels[i] > levels[i - 1]))) {
        fail(op, `spec.levels must be finite and strictly increasing; level ${i} is ${levels[i]}`);
      }
    }
  } else if (!(Number.isFinite(spec.steps) && spec.steps > 0)) {
    fail(op, `spec.steps must be a positive number when spec.levels is null, got ${spec.steps}`);
  }
  if (!(Number.isFinite(spec.delta) && spec.delta >= 0)) fail(op, `spec.delta must be a finite number >= 0, got ${spec.delta}`);
  if (spec.onlyClippedSums !== undefined && typeof spec.onlyClippedSums !== 'boolean') {
    fail(op, `spec.onlyClippedSums must be a boolean or absent, got ${String(spec.onlyClippedSums)}`);
  }
  return chunk;
}
