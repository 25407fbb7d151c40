/**
 * Lowering: a trained fake-quantized ResNet (src/models/resnet.ts, quantized by src/quant) to the
 * integer model of ir.ts.
 *
 * What becomes what:
 * - Quantized convs: weights as level indices into the quantizer's integer levels (APoT: signed
 *   numerators over its denominator; uniform methods: their integer codes), taken from the
 *   fake-quant forward of the weights itself, so the projection is the training one.
 * - Batch norm, the weight and input scales and EWGS's |output_scale| fold into one real affine map
 *   per output channel, M_c * acc + B_c, stored as a fixed-point multiplier, shift and bias in the
 *   units of whatever consumes the output.
 * - Inside a block the output of conv1 goes straight to conv2's activation codes (ReLU and the
 *   quantizer's thresholds applied to the requantized value). Block inputs and outputs (the
 *   residual stream) are int16 fixed point (or int8 with `residualBits: 8`), with scales chosen
 *   from calibration images: scale = headroom * max / (2^(bits-1) - 1), headroom 2 for int16
 *   (values up to twice the calibration maximum fit; resolution stays ~1e-4 of the maximum) and 1
 *   for int8. Tensors joined by identity shortcuts share a scale (one per stage), so identity
 *   shortcuts add exactly; elsewhere both branches are brought to the block output's scale
 *   before the add.
 * - The image: normalization folded into a per-channel lookup table to int8, one scale for all
 *   channels (max |normalized pixel| / 127), so padding (normalized 0) stays integer 0.
 * - Global average pooling: int32 sums; 1/(H*W) and the head batch norm fold into the
 *   classifier's input quantization.
 * - First conv and classifier follow the training's policy: int8 weights ('int8', 'apot8'; APoT's
 *   codes below -127 are clamped to -127 with a warning) or the method's own quantizers ('same').
 *   Layers the training kept float ('float' policy) are quantized after training to int8 per
 *   output channel, and a float classifier input to 8 bits from the calibration range: deviations
 *   from the fake-quantized model, listed in the model's notes and measured by the agreement check.
 * - Uniform activation rounding sends exact ties to the lower code (training: half to even); APoT
 *   ties go to the lower level in both.
 */
import { roundHalfEven } from '../backend/js/round.js';
import { type Normalization, normalizationTable } from '../data/augment.js';
import { BasicBlock, ResNet } from '../models/resnet.js';
import { BatchNorm, Conv2d, Linear, Sequential, ShortcutPad } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { type QuantizedLayer, isQuantizedLayer } from '../quant/qlayers.js';
import { quantizedLayers } from '../quant/quantize.js';
import type { TensorQuantizer } from '../quant/quantizer.js';
import { noGrad, tidy } from '../tensor/tensor.js';
import { type CalibrationImages, type CalibrationRanges, type ValueRange, calibrationRanges } from './calibrate.js';
import { INT32_MAX, toFixedMultiplier } from './int-ops.js';
import {
  type ActivationQuant,
  type CodeRule,
  type ConvOp,
  type Epilogue,
  type IntegerModel,
  IR_VERSION,
  type ModelMeta,
  type Op,
  type Requant,
  type Shortcut,
  type TensorInfo,
  type WeightTensor,
  convOutSize,
} from './ir.js';
import { VALUE_LIMIT, validateIntegerModel } from './validate.js';

export interface LowerOptions {
  /** The normalization the model was trained with (folded into the input lookup table). */
  readonly normalization: Normalization;
  /** A few hundred training images for the fixed-point scales. */
  readonly calibration: CalibrationImages;
  readonly residualBits?: 8 | 16;
  /**
   * Bits of the image after the lookup table (default 8). 16 keeps the normalized pixels almost
   * exactly (the int8 table's rounding is the largest deviation from the fake-quantized model).
   */
  readonly inputBits?: 8 | 16;
  /** Multiple of the calibration maximum that the residual scale covers (default 2 for int16, 1 for int8). */
  readonly residualHeadroom?: number;
  readonly meta: Omit<ModelMeta, 'normalization' | 'residualBits' | 'notes'>;
  /** Lowering warnings (also kept in the model's notes). */
  readonly warn?: (message: string) => void;
}

/** The model cannot be lowered (not quantized, unsupported layer or bit-width): names the layer. */
export class LoweringError extends Error {
  override name = 'LoweringError';
}

/** Requantized values are kept below this bound, half the validator's, so rounding never crosses it. */
const TARGET_LIMIT = VALUE_LIMIT / 2;
const MAX_FRAC_BITS = 16;
const IDENTITY = { mult: 2 ** 30, shift: 30 };

/** Real affine map of an integer input per output channel: y = M[c] * x + B[c]. */
interface Affine {
  readonly M: Float64Array;
  readonly B: Float64Array;
}

/** How a consumer's quantizer maps a real value to the integer its conv reads. */
interface ActivationScheme {
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

interface LoweredWeights {
  readonly weights: WeightTensor;
  /** Real value of integer 1 per output channel. */
  readonly scale: Float64Array;
}

function maxAbs(range: readonly [number, number]): number {
  return Math.max(Math.abs(range[0]), Math.abs(range[1]));
}

function rangeMaxAbs(r: ValueRange): number {
  return Math.max(Math.abs(r.min), Math.abs(r.max));
}

/** Entry c of a per-channel array, or its only entry. */
function at(values: Float64Array, c: number): number {
  return values[values.length === 1 ? 0 : c];
}

// ---- activation schemes ----------------------------------------------------------------------

function quantizerScheme(q: TensorQuantizer, layer: string): ActivationScheme {
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
function calibratedScheme(range: ValueRange): ActivationScheme {
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

function outChannelsOf(layer: Conv2d | Linear): number {
  return layer instanceof Conv2d ? layer.outChannels : layer.outFeatures;
}


/** Integer weights of a quantized layer, read off its own fake-quantized weights. */
function quantizedWeights(layer: (Conv2d | Linear) & QuantizedLayer, path: string, warn: (m: string) => void): LoweredWeights {
  const wq = layer.weightQuantizer!;
  if (wq.bits > 8) throw new LoweringError(`${path}: ${wq.bits}-bit weights cannot be represented (at most 8 bits)`);
  const values = tidy(() => noGrad(() => wq.apply(layer.weight, path).toArray()));
  const form = wq.integerForm();
  const outC = outChannelsOf(layer);
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
function calibratedWeights(layer: Conv2d | Linear): LoweredWeights {
  const w = layer.weight.toArray();
  const outC = outChannelsOf(layer);
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

// ---- the graph ---------------------------------------------------------------------------------

interface LoweringContext {
  readonly tensors: TensorInfo[];
  readonly ops: Op[];
  readonly notes: string[];
  readonly warn: (message: string) => void;
  readonly residualBits: 8 | 16;
  readonly residualHeadroom: number;
}

function addTensor(ctx: LoweringContext, t: TensorInfo): number {
  ctx.tensors.push(t);
  return ctx.tensors.length - 1;
}

function layerWeights(ctx: LoweringContext, layer: Conv2d | Linear, path: string): LoweredWeights {
  if (layer instanceof Conv2d && layer.params.groups !== 1) throw new LoweringError(`${path}: grouped convolutions are not supported`);
  if (isQuantizedLayer(layer) && layer.weightQuantizer) return quantizedWeights(layer as (Conv2d | Linear) & QuantizedLayer, path, ctx.warn);
  ctx.notes.push(`${path}: float weights quantized after training to int8 per output channel (post-training quantization; the fake-quantized model keeps them float)`);
  return calibratedWeights(layer);
}

/** y = M * acc + B of a layer (with |output_scale|) followed by an optional batch norm (eval). */
function foldAffine(layer: Conv2d | Linear, w: LoweredWeights, inputScale: number, bn: BatchNorm | null): Affine {
  const outC = w.scale.length;
  const alpha = isQuantizedLayer(layer) && layer.outputScale ? Math.abs(layer.outputScale.item()) : 1;
  const bias = layer.bias?.toArray() ?? new Float32Array(outC);
  const M = Float64Array.from(w.scale, (s) => s * inputScale * alpha);
  const B = Float64Array.from(bias, (b) => alpha * b);
  return bn ? foldBatchNorm({ M, B }, bn) : { M, B };
}

function foldBatchNorm(a: Affine, bn: BatchNorm): Affine {
  const [gamma, beta, mean, variance] = [bn.weight, bn.bias, bn.runningMean, bn.runningVar].map((t) => t.toArray());
  const g = Float64Array.from(gamma, (v, c) => v / Math.sqrt(variance[c] + bn.eps));
  return {
    M: Float64Array.from(g, (gc, c) => at(a.M, c) * gc),
    B: Float64Array.from(g, (gc, c) => gc * (at(a.B, c) - mean[c]) + beta[c]),
  };
}

/** Largest |v| of an affine map over inputs |x| <= bound, in units of `unit` after removing `offset`. */
function valueBound(a: Affine, inputBound: number, unit: number, offset: number): number {
  let worst = 0;
  for (let c = 0; c < a.M.length; c++) worst = Math.max(worst, (Math.abs(a.M[c]) * inputBound + Math.abs(a.B[c] - offset)) / unit + 2);
  return worst;
}

/** The finest unit baseUnit / 2^f (f <= 16) that keeps every value below the limit. */
function chooseFracBits(a: Affine, inputBound: number, baseUnit: number, offset: number, where: string): number {
  for (let f = MAX_FRAC_BITS; f >= 0; f--) if (valueBound(a, inputBound, baseUnit / 2 ** f, offset) < TARGET_LIMIT) return f;
  throw new LoweringError(`${where}: requantized values would overflow int32 even at the coarsest unit`);
}

function requantize(a: Affine, unit: number, offset: number, where: string): Requant {
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

function activationQuant(a: Affine, inputBound: number, s: ActivationScheme, relu: boolean, where: string): { requant: Requant; quant: ActivationQuant } {
  const f = chooseFracBits(a, inputBound, s.baseUnit, s.offset, where);
  const unit = s.baseUnit / 2 ** f;
  return { requant: requantize(a, unit, s.offset, where), quant: { relu, zeroPoint: Math.round(-s.offset / unit) + 0, rule: s.rule(f) } };
}

function accumulatorBound(w: WeightTensor, outC: number, inputRange: readonly [number, number], where: string): number {
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

type ConvTarget =
  | { readonly kind: 'activation'; readonly scheme: ActivationScheme; readonly relu: boolean; readonly name: string }
  | { readonly kind: 'residual'; readonly scale: number; readonly relu: boolean; readonly bits: number; readonly shortcut: Shortcut | null; readonly name: string }
  | { readonly kind: 'logits'; readonly baseUnit: number; readonly name: string };

/** Emit one conv (or the classifier as a 1x1 conv) with its epilogue; returns the output tensor. */
function emitConv(ctx: LoweringContext, path: string, layer: Conv2d | Linear, input: number, bn: BatchNorm | null, target: ConvTarget): number {
  const lw = layerWeights(ctx, layer, path);
  const inInfo = ctx.tensors[input];
  const affine = foldAffine(layer, lw, inInfo.scale, bn);
  const outC = lw.scale.length;
  const [kernel, stride, padding] = layer instanceof Conv2d ? [layer.kernel[0], layer.params.stride[0], layer.params.padding[0]] : [1, 1, 0];
  const shape = [outC, convOutSize(inInfo.shape[1], kernel, stride, padding), convOutSize(inInfo.shape[2], kernel, stride, padding)] as const;
  const accBound = accumulatorBound(lw.weights, outC, inInfo.range, path);
  let requant: Requant;
  let epilogue: Epilogue;
  let info: Omit<TensorInfo, 'shape' | 'name'>;
  if (target.kind === 'activation') {
    const { requant: r, quant } = activationQuant(affine, accBound, target.scheme, target.relu, path);
    requant = r;
    epilogue = { kind: 'activation', ...quant };
    info = { dtype: target.scheme.dtype, scale: target.scheme.valueScale, range: target.scheme.range };
  } else if (target.kind === 'residual') {
    if (!(valueBound(affine, accBound, target.scale, 0) < TARGET_LIMIT)) throw new LoweringError(`${path}: requantized values to the residual scale could overflow int32`);
    requant = requantize(affine, target.scale, 0, path);
    epilogue = { kind: 'residual', relu: target.relu, bits: target.bits, shortcut: target.shortcut };
    const top = 2 ** (target.bits - 1) - 1;
    info = { dtype: target.bits === 8 ? 'int8' : 'int16', scale: target.scale, range: [target.relu ? 0 : -top - 1, top] };
  } else {
    const f = chooseFracBits(affine, accBound, target.baseUnit, 0, path);
    const unit = target.baseUnit / 2 ** f;
    requant = requantize(affine, unit, 0, path);
    epilogue = { kind: 'logits' };
    const bound = Math.ceil(valueBound(affine, accBound, unit, 0));
    info = { dtype: 'int32', scale: unit, range: [-bound, bound] };
  }
  const output = addTensor(ctx, { name: target.name, shape, ...info });
  const op: ConvOp = { kind: 'conv', name: path, input, output, inChannels: inInfo.shape[0], outChannels: outC, kernel, stride, padding, weights: lw.weights, requant, epilogue };
  ctx.ops.push(op);
  return output;
}

/** Emit a quantize op: an integer tensor with affine `a` (per channel or per tensor) to activation values. */
function emitQuantize(ctx: LoweringContext, name: string, input: number, a: Affine, scheme: ActivationScheme, relu: boolean, outName: string): number {
  const inInfo = ctx.tensors[input];
  const { requant, quant } = activationQuant(a, maxAbs(inInfo.range), scheme, relu, name);
  const output = addTensor(ctx, { name: outName, dtype: scheme.dtype, shape: inInfo.shape, scale: scheme.valueScale, range: scheme.range });
  ctx.ops.push({ kind: 'quantize', name, input, output, requant, ...quant });
  return output;
}

/** The activation values a quantized layer reads, from a residual tensor. */
function quantizeResidual(ctx: LoweringContext, input: number, layer: Conv2d, path: string): number {
  const aq = (layer as Conv2d & QuantizedLayer).actQuantizer!;
  const scale = ctx.tensors[input].scale;
  return emitQuantize(ctx, path, input, { M: Float64Array.of(scale), B: Float64Array.of(0) }, quantizerScheme(aq, path), false, `${path}.input`);
}

/**
 * Residual scales. Tensors joined by identity shortcuts (the stem output and the blocks of the
 * first stage; the blocks of each later stage) share one scale, so an identity shortcut adds
 * without rescaling, exactly; the scale covers the largest calibration value of its group times
 * the headroom.
 */
function residualScales(ctx: LoweringContext, model: ResNet, ranges: CalibrationRanges): { stem: number; blocks: number[] } {
  const groups = [0];
  for (const block of model.blocks()) groups.push(block.shortcut === null ? groups[groups.length - 1] : groups[groups.length - 1] + 1);
  const values = [ranges.stem, ...ranges.blocks];
  const maxima = new Map<number, number>();
  groups.forEach((g, i) => maxima.set(g, Math.max(maxima.get(g) ?? 0, values[i].max)));
  const top = 2 ** (ctx.residualBits - 1) - 1;
  const scales = groups.map((g) => {
    const max = maxima.get(g)!;
    if (!(max > 0)) ctx.notes.push(`residual group ${g}: all calibration values were <= 0; its scale is set from 1.0`);
    return (ctx.residualHeadroom * (max > 0 ? max : 1)) / top;
  });
  return { stem: scales[0], blocks: scales.slice(1) };
}

function rescale(from: number, to: number, where: string): { mult: number; shift: number } {
  return from === to ? IDENTITY : toFixedMultiplier(from / to, where);
}

function requireQuantized(layer: Module | null, path: string): asserts layer is Conv2d & QuantizedLayer {
  if (!(layer instanceof Conv2d) || !isQuantizedLayer(layer) || !layer.weightQuantizer || !layer.actQuantizer) {
    throw new LoweringError(`${path}: expected a quantized convolution (weights and input), found ${layer?.constructor.name ?? 'nothing'}`);
  }
}

function emitBlock(ctx: LoweringContext, block: BasicBlock, path: string, x: number, outScale: number): number {
  requireQuantized(block.conv1, `${path}.conv1`);
  requireQuantized(block.conv2, `${path}.conv2`);
  const xInfo = ctx.tensors[x];
  const a1 = quantizeResidual(ctx, x, block.conv1, `${path}.conv1`);
  const conv2Scheme = quantizerScheme(block.conv2.actQuantizer!, `${path}.conv2`);
  const a2 = emitConv(ctx, `${path}.conv1`, block.conv1, a1, block.bn1, { kind: 'activation', scheme: conv2Scheme, relu: true, name: `${path}.conv2.input` });
  let shortcut: Shortcut;
  const sc = block.shortcut;
  if (sc === null) {
    shortcut = { input: x, stride: 1, channelOffset: 0, ...rescale(xInfo.scale, outScale, `${path} identity shortcut`) };
  } else if (sc instanceof ShortcutPad) {
    shortcut = { input: x, stride: sc.stride, channelOffset: sc.padBefore, ...rescale(xInfo.scale, outScale, `${path}.shortcut`) };
  } else if (sc instanceof Sequential && sc.layers.length === 2 && sc.layers[1] instanceof BatchNorm) {
    const conv = sc.layers[0];
    requireQuantized(conv, `${path}.shortcut.0`);
    const as = quantizeResidual(ctx, x, conv, `${path}.shortcut.0`);
    const s = emitConv(ctx, `${path}.shortcut.0`, conv, as, sc.layers[1], { kind: 'residual', scale: outScale, relu: false, bits: 16, shortcut: null, name: `${path}.shortcut` });
    shortcut = { input: s, stride: 1, channelOffset: 0, ...IDENTITY };
  } else {
    throw new LoweringError(`${path}.shortcut: unsupported shortcut ${sc.constructor.name}`);
  }
  return emitConv(ctx, `${path}.conv2`, block.conv2, a2, block.bn2, { kind: 'residual', scale: outScale, relu: true, bits: ctx.residualBits, shortcut, name: `${path}.output` });
}

/** The input lookup table (int8 or int16 values) with the normalization folded in. */
function inputTable(norm: Normalization, bits: 8 | 16): { lut: Int16Array; scale: number } {
  const table = normalizationTable(norm);
  const top = 2 ** (bits - 1) - 1;
  const scale = table.reduce((m, v) => Math.max(m, Math.abs(v)), 0) / top;
  return { lut: Int16Array.from(table, (v) => Math.max(-top, Math.min(top, roundHalfEven(v / scale)))), scale };
}

function checkModel(model: ResNet): void {
  if (!(model instanceof ResNet)) throw new LoweringError('only ResNet models (src/models/resnet.ts) can be lowered');
  if (quantizedLayers(model).length === 0) {
    throw new LoweringError('the model has no quantizers (a float checkpoint?): export needs a quantization-aware trained model');
  }
}

function emitClassifier(ctx: LoweringContext, model: ResNet, x: number, ranges: CalibrationRanges): number {
  const xInfo = ctx.tensors[x];
  const [channels, h, w] = xInfo.shape;
  const pool = addTensor(ctx, { name: 'pool', dtype: 'int32', shape: [channels, 1, 1], scale: xInfo.scale / (h * w), range: [h * w * xInfo.range[0], h * w * xInfo.range[1]] });
  ctx.ops.push({ kind: 'sumpool', input: x, output: pool });
  const linear = model.linear;
  const pooled: Affine = { M: Float64Array.of(xInfo.scale / (h * w)), B: Float64Array.of(0) };
  const features = model.bn2 ? foldBatchNorm(pooled, model.bn2) : pooled;
  const aq = isQuantizedLayer(linear) ? linear.actQuantizer : null;
  let scheme: ActivationScheme;
  if (aq) {
    scheme = quantizerScheme(aq, 'linear');
  } else {
    scheme = calibratedScheme(ranges.classifierInput);
    ctx.notes.push(`linear: its float input is quantized after training to ${scheme.dtype} from the calibration range (post-training quantization)`);
  }
  const input = emitQuantize(ctx, 'linear.input', pool, features, scheme, false, 'linear.input');
  const logitUnit = rangeMaxAbs(ranges.logits) || 1;
  return emitConv(ctx, 'linear', linear, input, null, { kind: 'logits', baseUnit: logitUnit, name: 'logits' });
}

/** Lower a trained, quantized ResNet. Throws LoweringError naming the layer that cannot be lowered. */
export function lowerResNet(model: ResNet, opts: LowerOptions): IntegerModel {
  checkModel(model);
  const residualBits = opts.residualBits ?? 16;
  if (residualBits !== 8 && residualBits !== 16) throw new LoweringError(`residual bits must be 8 or 16, got ${residualBits}`);
  const residualHeadroom = opts.residualHeadroom ?? (residualBits === 16 ? 2 : 1);
  if (!(residualHeadroom >= 1)) throw new LoweringError(`residual headroom must be >= 1, got ${residualHeadroom}`);
  const notes: string[] = [];
  const warn = (m: string): void => {
    notes.push(m);
    opts.warn?.(m);
  };
  const ctx: LoweringContext = { tensors: [], ops: [], notes, warn, residualBits, residualHeadroom };
  if (model.conv1 instanceof Conv2d && isQuantizedLayer(model.conv1) && model.conv1.actQuantizer) {
    throw new LoweringError('conv1: a quantizer on the image input is not supported (the image enters through the int8 lookup table)');
  }
  const ranges = calibrationRanges(model, opts.calibration, opts.normalization);
  const { channels, height, width } = opts.calibration;
  const inputBits = opts.inputBits ?? 8;
  if (inputBits !== 8 && inputBits !== 16) throw new LoweringError(`input bits must be 8 or 16, got ${inputBits}`);
  const { lut, scale } = inputTable(opts.normalization, inputBits);
  const image = addTensor(ctx, { name: 'image', dtype: inputBits === 8 ? 'int8' : 'int16', shape: [channels, height, width], scale, range: [Math.min(...lut), Math.max(...lut)] });
  ctx.ops.push({ kind: 'input', output: image, lut });
  notes.push(`input: normalization folded into an int${inputBits} lookup table (one scale ${scale.toPrecision(4)} for all channels); the float model sees the exact normalized pixels`);
  notes.push(
    `residual stream: int${residualBits} fixed point, scales from ${ranges.images} calibration images with headroom x${residualHeadroom}; the fake-quantized model keeps it float`,
  );
  const scales = residualScales(ctx, model, ranges);
  let x = emitConv(ctx, 'conv1', model.conv1, image, model.bn1, { kind: 'residual', scale: scales.stem, relu: model.bn1.relu, bits: residualBits, shortcut: null, name: 'stem.output' });
  const blockPaths = model.stages.flatMap((stage, s) => stage.layers.map((_, b) => `layer${s + 1}.${b}`));
  model.blocks().forEach((block, i) => {
    x = emitBlock(ctx, block, blockPaths[i], x, scales.blocks[i]);
  });
  const output = emitClassifier(ctx, model, x, ranges);
  const ir: IntegerModel = {
    version: IR_VERSION,
    meta: { ...opts.meta, normalization: { mean: [...opts.normalization.mean], std: [...opts.normalization.std] }, residualBits, notes },
    tensors: ctx.tensors,
    ops: ctx.ops,
    output,
  };
  validateIntegerModel(ir);
  return ir;
}
