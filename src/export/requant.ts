/**
 * The arithmetic of lowering (lower.ts): how a quantizer's levels become integer codes, weights
 * become level indices, batch norm and scales fold into one real affine map per output channel,
 * and that map becomes a fixed-point multiplier, shift and bias with int32 bounds checked.
 */
import { roundHalfEven } from '../backend/js/round.js';
import type { BatchNormNode, ConvNode, LinearNode } from '../graph/index.js';
import type { TensorQuantizer } from '../quant/quantizer.js';
import { noGrad, tidy } from '../tensor/tensor.js';
import type { ValueRange } from './calibrate.js';
import { INT32_MAX, toFixedMultiplier } from './int-ops.js';
import type { ActivationQuant, CodeRule, Requant, WeightTensor } from './ir.js';
import { VALUE_LIMIT } from './validate.js';

/** The model cannot be lowered (not quantized, unsupported layer or bit-width): names the layer. */
export class LoweringError extends Error {
  override name = 'LoweringError';
}

/** A conv or linear node's op: the layers that hold weights. */
export type WeightedOp = ConvNode | LinearNode;

/** Requantized values are kept below this bound, half the validator's, so rounding never crosses it. */
export const TARGET_LIMIT = VALUE_LIMIT / 2;
/**
 * Fractional bits of a requantized value below its quantizer's step: 24 keep the integer model's
 * rounding finer than float32's, so a conv output the fake-quantized model puts on one side of a
 * threshold lands on the same side (a learned value can sit within 1e-6 of a threshold: STE
 * oscillation). The logits need no more than 16 to order their classes.
 */
const MAX_FRAC_BITS = 24;
export const LOGITS_FRAC_BITS = 16;
export const IDENTITY = { mult: 2 ** 30, shift: 30 };

/** Real affine map of an integer input per output channel: y = M[c] * x + B[c]. */
export interface Affine {
  readonly M: Float64Array;
  readonly B: Float64Array;
}

/** How a consumer's quantizer maps a real value to the integer its conv reads. */
export interface ActivationScheme {
  /** Real value of one unit of v at fracBits 0 (the quantizer's step). */
  readonly baseUnit: number;
  /** Real value at v = 0 (the quantizer's offset). */
  readonly offset: number;
  readonly rule: (fracBits: number) => CodeRule;
  /** Real value of integer 1 of the tensor it produces. */
  readonly valueScale: number;
  readonly dtype: 'uint8' | 'int8';
  readonly range: readonly [number, number];
}

export interface LoweredWeights {
  readonly weights: WeightTensor;
  /** Real value of integer 1 per output channel. */
  readonly scale: Float64Array;
}

export function maxAbs(range: readonly [number, number]): number {
  return Math.max(Math.abs(range[0]), Math.abs(range[1]));
}

export function rangeMaxAbs(r: ValueRange): number {
  return Math.max(Math.abs(r.min), Math.abs(r.max));
}

/** Entry c of a per-channel array, or its only entry. */
export function at(values: Float64Array, c: number): number {
  return values[values.length === 1 ? 0 : c];
}

// ---- activation schemes ----------------------------------------------------------------------

export function quantizerScheme(q: TensorQuantizer, layer: string): ActivationScheme {
  const form = q.integerForm();
  const spec = form.spec;
  if (q.role !== 'activation' || spec.channels !== 1 || spec.symmetric || spec.outOffset[0] !== 0) {
    throw new LoweringError(`${layer}: input quantizer ${q.method} is not a per-tensor activation quantizer with zero offset`);
  }
  if (q.bits > 8) throw new LoweringError(`${layer}: ${q.bits}-bit activations cannot be represented (at most 8 bits)`);
  const codes = Array.from(form.codes);
  if (spec.levels) {
    // Non-uniform levels (APoT): integer numerators n_k; level k = n_k / n_last in units of spec.scale.
    const top = codes[codes.length - 1];
    if (spec.hi !== 1 || codes[0] !== 0 || spec.levels.length !== codes.length) throw new LoweringError(`${layer}: unexpected non-uniform activation levels`);
    const baseUnit = spec.scale[0] / top;
    return {
      baseUnit,
      offset: spec.offset[0],
      rule: (f) => ({
        kind: 'thresholds',
        thresholds: Int32Array.from(codes.slice(1), (n, k) => Math.floor((codes[k] + n) * 2 ** (f - 1))),
        values: Int32Array.from(codes),
      }),
      valueScale: spec.outScale[0] / top,
      dtype: 'uint8',
      range: [0, top],
    };
  }
  const steps = spec.steps;
  const minCode = Math.ceil(spec.lo * steps) || 0;
  const maxCode = Math.floor(spec.hi * steps);
  if (!Number.isFinite(minCode) || !Number.isFinite(maxCode) || codes.length !== maxCode - minCode + 1 || codes.some((c, i) => c !== minCode + i)) {
    throw new LoweringError(`${layer}: ${q.method} activation codes [${codes[0]}..${codes.at(-1)}] do not match its clip range [${spec.lo}, ${spec.hi}] x ${steps}`);
  }
  return {
    baseUnit: spec.scale[0] / steps,
    offset: spec.offset[0],
    rule: (f) => ({ kind: 'round', fracBits: f, minCode, maxCode }),
    valueScale: spec.outScale[0] / steps,
    dtype: minCode < 0 ? 'int8' : 'uint8',
    range: [minCode, maxCode],
  };
}

/** 8-bit quantization of a float tensor after training, from its calibration range. */
export function calibratedScheme(range: ValueRange): ActivationScheme {
  const signed = range.min < 0;
  const top = signed ? 127 : 255;
  const unit = (rangeMaxAbs(range) || 1) / top;
  return {
    baseUnit: unit,
    offset: 0,
    rule: (f) => ({ kind: 'round', fracBits: f, minCode: signed ? -127 : 0, maxCode: top }),
    valueScale: unit,
    dtype: signed ? 'int8' : 'uint8',
    range: [signed ? -127 : 0, top],
  };
}

// ---- weights ---------------------------------------------------------------------------------

function outChannelsOf(op: WeightedOp): number {
  return op.kind === 'conv' ? op.outChannels : op.outFeatures;
}


/** Integer weights of a quantized layer, read off its own fake-quantized weights. */
export function quantizedWeights(op: WeightedOp, wq: TensorQuantizer, path: string, warn: (m: string) => void): LoweredWeights {
  if (wq.bits > 8) throw new LoweringError(`${path}: ${wq.bits}-bit weights cannot be represented (at most 8 bits)`);
  const values = tidy(() => noGrad(() => wq.apply(op.weight, path).toArray()));
  const form = wq.integerForm();
  const outC = outChannelsOf(op);
  const perScale = values.length / form.scale.length;
  const int8 = form.method === 'int8';
  let levels = Int32Array.from(form.codes);
  if (int8) levels = Int32Array.from(new Set(Array.from(levels, (v) => Math.max(v, -127))));
  if (levels.length > 2 ** wq.bits) throw new LoweringError(`${path}: ${levels.length} weight levels do not fit ${wq.bits} bits`);
  const index = new Map(Array.from(levels, (v, i) => [v, i]));
  const codes = new Uint8Array(values.length);
  let clamped = 0;
  let lowest = 0;
  for (let i = 0; i < values.length; i++) {
    const exact = values[i] / form.scale[Math.floor(i / perScale)];
    let k = Math.round(exact);
    if (!(Math.abs(exact - k) <= 1e-3 * Math.max(1, Math.abs(k)))) throw new LoweringError(`${path}: weight ${i} (${values[i]}) is not on the quantizer's integer grid`);
    if (int8 && k < -127) {
      clamped++;
      lowest = Math.min(lowest, k);
      k = -127;
    }
    const code = index.get(k);
    if (code === undefined) throw new LoweringError(`${path}: weight ${i} has integer value ${k}, not one of the quantizer's levels`);
    codes[i] = code;
  }
  if (clamped > 0) {
    warn(`${path}: ${clamped} int8 weight code(s) below -127 (lowest ${lowest}, APoT's signed-maximum scaling) clamped to -127; the fake-quantized model keeps them`);
  }
  const scale = Float64Array.from({ length: outC }, (_, c) => form.scale[form.scale.length === 1 ? 0 : c]);
  const scheme = form.method === 'apot' ? 'apot' : int8 ? 'int8' : 'uniform';
  return { weights: { bits: wq.bits, scheme, levels, codes }, scale };
}

/** Post-training int8 weights of a layer that training kept float: symmetric, per output channel. */
export function calibratedWeights(op: WeightedOp): LoweredWeights {
  const w = op.weight.toArray();
  const outC = outChannelsOf(op);
  const per = w.length / outC;
  const scale = new Float64Array(outC);
  const codes = new Uint8Array(w.length);
  for (let c = 0; c < outC; c++) {
    let m = 0;
    for (let i = c * per; i < (c + 1) * per; i++) m = Math.max(m, Math.abs(w[i]));
    scale[c] = m > 0 ? m / 127 : 1;
    for (let i = c * per; i < (c + 1) * per; i++) codes[i] = Math.max(-127, Math.min(127, roundHalfEven(w[i] / scale[c]))) + 127;
  }
  return { weights: { bits: 8, scheme: 'int8', levels: Int32Array.from({ length: 255 }, (_, i) => i - 127), codes }, scale };
}

/** y = M * acc + B of a layer (with |output_scale|) followed by an optional batch norm (eval). */
export function foldAffine(op: WeightedOp, w: LoweredWeights, inputScale: number, bn: BatchNormNode | null): Affine {
  const alpha = outputScaleOf(op);
  const M = Float64Array.from(w.scale, (s) => s * inputScale * alpha);
  const B = Float64Array.from(op.bias?.toArray() ?? new Float32Array(w.scale.length), (b) => alpha * b);
  return bn ? foldBatchNorm({ M, B }, bn) : { M, B };
}

/** EWGS's |output_scale| of a layer, or 1. */
function outputScaleOf(op: WeightedOp): number {
  return op.quant?.outputScale ? Math.abs(op.quant.outputScale.item()) : 1;
}

export function foldBatchNorm(a: Affine, bn: BatchNormNode): Affine {
  const [gamma, beta, mean, variance] = [bn.gamma, bn.beta, bn.mean, bn.variance].map((t) => t.toArray());
  const g = Float64Array.from(gamma, (v, c) => v / Math.sqrt(variance[c] + bn.eps));
  return {
    M: Float64Array.from(g, (gc, c) => at(a.M, c) * gc),
    B: Float64Array.from(g, (gc, c) => gc * (at(a.B, c) - mean[c]) + beta[c]),
  };
}

/** Largest |v| of an affine map over inputs |x| <= bound, in units of `unit` after removing `offset`. */
export function valueBound(a: Affine, inputBound: number, unit: number, offset: number): number {
  let worst = 0;
  for (let c = 0; c < a.M.length; c++) worst = Math.max(worst, (Math.abs(a.M[c]) * inputBound + Math.abs(a.B[c] - offset)) / unit + 2);
  return worst;
}

/** The finest unit baseUnit / 2^f (f <= maxFracBits) that keeps every value below the limit. */
export function chooseFracBits(a: Affine, inputBound: number, baseUnit: number, offset: number, where: string, maxFracBits = MAX_FRAC_BITS): number {
  for (let f = maxFracBits; f >= 0; f--) if (valueBound(a, inputBound, baseUnit / 2 ** f, offset) < TARGET_LIMIT) return f;
  throw new LoweringError(`${where}: requantized values would overflow int32 even at the coarsest unit`);
}

export function requantize(a: Affine, unit: number, offset: number, where: string): Requant {
  const n = a.M.length;
  const r = { mult: new Int32Array(n), shift: new Uint8Array(n), bias: new Int32Array(n) };
  for (let c = 0; c < n; c++) {
    const f = toFixedMultiplier(a.M[c] / unit, `${where} channel ${c}`);
    r.mult[c] = f.mult;
    r.shift[c] = f.shift;
    r.bias[c] = Math.round((a.B[c] - offset) / unit);
  }
  return r;
}

export function activationQuant(a: Affine, inputBound: number, s: ActivationScheme, clip: Clip, where: string): { requant: Requant; quant: ActivationQuant } {
  const f = chooseFracBits(a, inputBound, s.baseUnit, s.offset, where);
  const unit = s.baseUnit / 2 ** f;
  const ceiling = clip.ceiling === null ? null : Math.floor((clip.ceiling - s.offset) / unit);
  return { requant: requantize(a, unit, s.offset, where), quant: { relu: clip.relu, ceiling, zeroPoint: Math.round(-s.offset / unit) + 0, rule: s.rule(f) } };
}

export function accumulatorBound(w: WeightTensor, outC: number, inputRange: readonly [number, number], where: string): number {
  const per = w.codes.length / outC;
  let worst = 0;
  for (let o = 0; o < outC; o++) {
    let sum = 0;
    for (let i = o * per; i < (o + 1) * per; i++) sum += Math.abs(w.levels[w.codes[i]]);
    worst = Math.max(worst, sum);
  }
  const bound = worst * maxAbs(inputRange);
  if (bound > INT32_MAX) throw new LoweringError(`${where}: the int32 accumulator could overflow (bound ${bound})`);
  return bound;
}

/** The ReLU after a value: none, max(v, 0), or clipped to [0, ceiling] (real units). */
export interface Clip {
  readonly relu: boolean;
  readonly ceiling: number | null;
}
