/**
 * Synthetic integer models (ir.ts version 2) for tests (no tests here): deterministic, seeded
 * random models that exercise every op and option of the IR, so that every integer engine (the
 * TypeScript engine, generated C, the oneDNN host engine) can be compared bit for bit without a
 * trained network. Each model passes validate.ts.
 *
 * Multipliers are set from a rough estimate of each tensor's spread (the standard deviation of its
 * values on random images) so that requantized values land inside the targets' ranges: a fair
 * share of them is clipped by relus and ceilings, most are not.
 */
import type { ActivationQuant, DType, Epilogue, IntegerModel, Op, Pair, Requant, Shortcut, TensorInfo, WeightTensor } from '../src/export/ir.js';
import { IR_VERSION, inputShape, tensorSize } from '../src/export/ir.js';
import { toFixedMultiplier } from '../src/export/int-ops.js';
import { validateIntegerModel, windowOutSize } from '../src/export/validate.js';
import { Rng } from '../src/util/rng.js';

/** How a conv's weights are quantized: APoT (sums of two powers of two), uniform of `bits` bits, or 8-bit. */
export type WeightKind = 'apot' | 'uniform' | 'int8';

/**
 * An activation quantization: `apot` (thresholds rule, unsigned APoT-like level numerators),
 * `uniform` (round rule, unsigned codes), `signed` (round rule, signed codes, no relu).
 */
export interface ActivationSpec {
  readonly rule: 'apot' | 'uniform' | 'signed';
  readonly bits: number;
  /** A clipped ReLU: v = min(v, ceiling) at 60 % of the top of the range. */
  readonly ceiling?: boolean;
}

export interface ResidualSpec {
  readonly bits: 8 | 16;
  readonly relu: boolean;
  readonly ceiling?: boolean;
  readonly shortcut?: { readonly input: number; readonly stride: number; readonly channelOffset: number };
}

export type ConvTarget = { readonly kind: 'activation'; readonly act: ActivationSpec } | ({ readonly kind: 'residual' } & ResidualSpec) | { readonly kind: 'logits' };

export interface ConvSpec {
  readonly out: number;
  readonly kernel: Pair;
  readonly stride?: Pair;
  readonly padding?: Pair;
  readonly groups?: number;
  readonly weights: WeightKind;
  readonly target: ConvTarget;
}

/** Unsigned APoT-like level numerators: 0 and the sums of at most two powers of two, ascending. */
function apotValues(count: number): number[] {
  const values = new Set<number>([0]);
  for (let i = 0; i < 8; i++) for (let j = -1; j < i; j++) values.add(2 ** i + (j >= 0 ? 2 ** j : 0));
  return [...values].sort((a, b) => a - b).slice(0, count);
}

function weightLevels(kind: WeightKind): { bits: number; levels: number[] } {
  if (kind === 'int8') return { bits: 8, levels: Array.from({ length: 255 }, (_, i) => i - 127) };
  if (kind === 'uniform') return { bits: 3, levels: [-3, -2, -1, 0, 1, 2, 3] };
  const magnitudes = apotValues(8); // 0, 1, 2, 3, 4, 5, 6, 8
  return { bits: 4, levels: [...magnitudes.slice(1).reverse().map((v) => -v), ...magnitudes] };
}

function rootMeanSquare(values: readonly number[]): number {
  return Math.sqrt(values.reduce((s, v) => s + v * v, 0) / values.length);
}

/** Builds one model op by op, tracking each tensor's spread to choose multipliers. */
export class IrModelBuilder {
  readonly tensors: TensorInfo[] = [];
  readonly ops: Op[] = [];
  /** Rough standard deviation of each tensor's values. */
  readonly #spread: number[] = [];
  readonly #rng: Rng;
  #normalization: { mean: number[]; std: number[] } = { mean: [], std: [] };

  constructor(seed: number) {
    this.#rng = new Rng(seed);
  }

  #tensor(name: string, dtype: DType, shape: readonly [number, number, number], range: readonly [number, number], spread: number, scale = 1 / 64): number {
    this.tensors.push({ name, dtype, shape, scale, range });
    this.#spread.push(spread);
    return this.tensors.length - 1;
  }

  #uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.#rng.next();
  }

  /** The input op: a per-channel normalization of pixel/255 into int8 (peak 127) or int16 (peak 2000) values. */
  input(channels: number, height: number, width: number, dtype: 'int8' | 'int16'): number {
    const peak = dtype === 'int8' ? 127 : 2000;
    const mean = Array.from({ length: channels }, () => this.#uniform(0.3, 0.6));
    const std = Array.from({ length: channels }, () => this.#uniform(0.2, 0.3));
    this.#normalization = { mean, std };
    const top = Math.max(...mean.map((m, c) => Math.max(m, 1 - m) / std[c]));
    const scale = top / peak;
    const lut = Int16Array.from({ length: channels * 256 }, (_, i) => Math.round((i % 256 / 255 - mean[Math.floor(i / 256)]) / std[Math.floor(i / 256)] / scale));
    const output = this.#tensor('image', dtype, [channels, height, width], [Math.min(...lut), Math.max(...lut)], peak / 2, scale);
    this.ops.push({ kind: 'input', output, lut });
    return output;
  }

  /** v range and the rest of an activation quantization (zeroPoint 0; the uniform relu one a little below, as an offset quantizer gives). */
  #activation(spec: ActivationSpec): { quant: ActivationQuant; values: [number, number]; vRange: [number, number] } {
    const fracBits = 1 + this.#rng.int(3);
    const unit = 2 ** fracBits;
    const vTop = (top: number): number | null => (spec.ceiling ? Math.round(0.6 * top * unit) : null);
    if (spec.rule === 'apot') {
      const values = apotValues(2 ** spec.bits);
      const thresholds = values.slice(1).map((v, k) => (values[k] + v) * 2 ** (fracBits - 1));
      const top = values[values.length - 1];
      const rule = { kind: 'thresholds', thresholds: Int32Array.from(thresholds), values: Int32Array.from(values) } as const;
      return { quant: { relu: true, ceiling: vTop(top), zeroPoint: 0, rule }, values: [0, top], vRange: [0, top * unit] };
    }
    const [minCode, maxCode] = spec.rule === 'uniform' ? [0, 2 ** spec.bits - 1] : [-(2 ** (spec.bits - 1)), 2 ** (spec.bits - 1) - 1];
    const relu = spec.rule === 'uniform';
    const zeroPoint = relu ? 0 - this.#rng.int(unit) : 0; // 0 - 0 is +0, which a file round trip keeps
    const rule = { kind: 'round', fracBits, minCode, maxCode } as const;
    return { quant: { relu, ceiling: vTop(maxCode), zeroPoint, rule }, values: [minCode, maxCode], vRange: [minCode * unit, maxCode * unit] };
  }

  /** Per-channel (or one-entry) requantization mapping values of spread `spread` onto a spread of `target` around `center`. */
  #requant(channels: number, spread: number, target: number, center: number): Requant {
    const fixed = Array.from({ length: channels }, (_, c) => toFixedMultiplier((this.#uniform(0.6, 1.4) * target) / spread, `requant ${c}`));
    return {
      mult: Int32Array.from(fixed, (f) => f.mult),
      shift: Uint8Array.from(fixed, (f) => f.shift),
      bias: Int32Array.from({ length: channels }, () => Math.round(center + this.#uniform(-0.3, 0.3) * target)),
    };
  }

  #weights(kind: WeightKind, count: number): { weights: WeightTensor; rms: number } {
    const { bits, levels } = weightLevels(kind);
    const codes = Uint8Array.from({ length: count }, () => this.#rng.int(levels.length));
    return { weights: { bits, scheme: kind, levels: Int32Array.from(levels), codes }, rms: rootMeanSquare(levels) };
  }

  conv(name: string, input: number, spec: ConvSpec): number {
    const [inChannels, h, w] = this.tensors[input].shape;
    const { kernel, stride = [1, 1], padding = [0, 0], groups = 1 } = spec;
    const patch = (inChannels / groups) * kernel[0] * kernel[1];
    const { weights, rms } = this.#weights(spec.weights, spec.out * patch);
    const accSpread = Math.sqrt(patch) * rms * this.#spread[input];
    const shape = [spec.out, ...windowOutSize(h, w, kernel, stride, padding)] as const;
    const t = spec.target;
    let epilogue: Epilogue;
    let requant: Requant;
    let output: number;
    if (t.kind === 'activation') {
      const { quant, values, vRange } = this.#activation(t.act);
      const span = vRange[1] - vRange[0];
      requant = this.#requant(spec.out, accSpread, span / 4, (vRange[0] + vRange[1]) / 2 - (quant.relu ? span / 4 : 0));
      epilogue = { kind: 'activation', ...quant };
      output = this.#tensor(`${name}.out`, values[0] < 0 ? 'int8' : 'uint8', shape, values, (values[1] - values[0]) / 4);
    } else if (t.kind === 'residual') {
      const top = 2 ** (t.bits - 1) - 1;
      const ceiling = t.ceiling ? Math.round(top / 3) : null;
      requant = this.#requant(spec.out, accSpread, top / 8, 0);
      epilogue = { kind: 'residual', relu: t.relu, ceiling, bits: t.bits, shortcut: t.shortcut ? this.#shortcut(t.shortcut) : null };
      output = this.#tensor(`${name}.out`, t.bits === 8 ? 'int8' : 'int16', shape, [t.relu ? 0 : -top - 1, ceiling ?? top], top / 8);
    } else {
      requant = this.#requant(spec.out, accSpread, 1000, 0);
      epilogue = { kind: 'logits' };
      output = this.#tensor(`${name}.logits`, 'int32', shape, [-0x80000000, 0x7fffffff], 1000, 1 / 1024);
    }
    this.ops.push({ kind: 'conv', name, input, output, inChannels, outChannels: spec.out, kernel, stride, padding, groups, weights, requant, epilogue });
    return output;
  }

  /** A shortcut rescaled by a factor in [0.5, 1.5]. */
  #shortcut(s: { readonly input: number; readonly stride: number; readonly channelOffset: number }): Shortcut {
    return { ...s, ...toFixedMultiplier(this.#uniform(0.5, 1.5), 'shortcut') };
  }

  /** A linear layer: a conv whose kernel covers the whole input, to int32 logits. */
  linear(name: string, input: number, classes: number, weights: WeightKind = 'int8'): number {
    const [, h, w] = this.tensors[input].shape;
    return this.conv(name, input, { out: classes, kernel: [h, w], weights, target: { kind: 'logits' } });
  }

  /** A quantize op with per-channel requantization, or one entry for all channels. */
  quantize(name: string, input: number, act: ActivationSpec, perChannel: boolean): number {
    const source = this.tensors[input];
    const { quant, values, vRange } = this.#activation(act);
    const span = vRange[1] - vRange[0];
    const requant = this.#requant(perChannel ? source.shape[0] : 1, this.#spread[input], span / 4, (vRange[0] + vRange[1]) / 2 - (quant.relu ? span / 4 : 0));
    const output = this.#tensor(`${name}.out`, values[0] < 0 ? 'int8' : 'uint8', source.shape, values, (values[1] - values[0]) / 4);
    this.ops.push({ kind: 'quantize', name, input, output, requant, ...quant });
    return output;
  }

  /** A sumpool (int32 window sums; padding adds zeros) or a maxpool (the input's dtype and range). */
  pool(kind: 'sumpool' | 'maxpool', name: string, input: number, kernel: Pair, stride: Pair = kernel, padding: Pair = [0, 0]): number {
    const source = this.tensors[input];
    const [c, h, w] = source.shape;
    const shape = [c, ...windowOutSize(h, w, kernel, stride, padding)] as const;
    const spread = this.#spread[input];
    let output: number;
    if (kind === 'maxpool') {
      output = this.#tensor(`${name}.out`, source.dtype, shape, source.range, spread, source.scale);
    } else {
      const n = kernel[0] * kernel[1];
      const padded = padding[0] > 0 || padding[1] > 0;
      const [lo, hi] = padded ? [Math.min(source.range[0], 0), Math.max(source.range[1], 0)] : source.range;
      output = this.#tensor(`${name}.out`, 'int32', shape, [n * lo, n * hi], spread * n, source.scale);
    }
    this.ops.push({ kind, name, input, output, kernel, stride, padding });
    return output;
  }

  /** The global average pooling's sums: the window [H, W]. */
  globalSumPool(name: string, input: number): number {
    const [, h, w] = this.tensors[input].shape;
    return this.pool('sumpool', name, input, [h, w]);
  }

  /** a + b, each rescaled (by factors of about 1), then relu, ceiling and the clamp to `bits` bits. */
  add(name: string, a: number, b: number, spec: Omit<ResidualSpec, 'shortcut'>): number {
    const top = 2 ** (spec.bits - 1) - 1;
    const ceiling = spec.ceiling ? Math.round(top / 3) : null;
    const rescale = (input: number): { input: number; mult: number; shift: number } => ({ input, ...toFixedMultiplier(this.#uniform(0.5, 1.5), `${name} input`) });
    const spread = Math.hypot(this.#spread[a], this.#spread[b]);
    const output = this.#tensor(`${name}.out`, spec.bits === 8 ? 'int8' : 'int16', this.tensors[a].shape, [spec.relu ? 0 : -top - 1, ceiling ?? top], spread);
    this.ops.push({ kind: 'add', name, a: rescale(a), b: rescale(b), output, relu: spec.relu, ceiling, bits: spec.bits });
    return output;
  }

  /** The model with `output` (an int32 logits tensor) as its output; validated. */
  build(name: string, output: number): IntegerModel {
    const classes = Array.from({ length: tensorSize(this.tensors[output]) }, (_, i) => `class${i}`);
    const meta = { model: name, method: 'synthetic', wbits: 4, abits: 4, firstLast: 'int8', normalization: this.#normalization, residualBits: 16, classes, notes: [] };
    const model: IntegerModel = { version: IR_VERSION, meta, tensors: this.tensors, ops: this.ops, output };
    validateIntegerModel(model);
    return model;
  }
}

const APOT4: ActivationSpec = { rule: 'apot', bits: 4 };
const UNIFORM4: ActivationSpec = { rule: 'uniform', bits: 4 };
const SIGNED4: ActivationSpec = { rule: 'signed', bits: 4 };

/** Dense convs with non-square kernels, strides and paddings, maxpool, a signed activation, a global sumpool and a quantize with one requant entry. */
function denseCase(seed: number): IntegerModel {
  const b = new IrModelBuilder(seed);
  let x = b.input(3, 13, 11, 'int8');
  x = b.conv('stem', x, { out: 8, kernel: [3, 5], stride: [2, 1], padding: [1, 2], weights: 'int8', target: { kind: 'activation', act: APOT4 } });
  x = b.conv('conv2', x, { out: 12, kernel: [1, 1], weights: 'uniform', target: { kind: 'activation', act: { ...UNIFORM4, ceiling: true } } });
  x = b.pool('maxpool', 'pool1', x, [3, 2], [2, 2], [1, 1]);
  x = b.conv('conv3', x, { out: 10, kernel: [2, 3], stride: [1, 2], padding: [0, 1], weights: 'apot', target: { kind: 'activation', act: SIGNED4 } });
  x = b.globalSumPool('gap', x);
  x = b.quantize('gap.quantize', x, UNIFORM4, false);
  return b.build('dense-nonsquare', b.linear('fc', x, 5));
}

/** A DS-CNN / MobileNet-like net on a 1-channel int16 input: depthwise (one strided), pointwise and grouped convs, ReLU6-like ceilings, a padded windowed sumpool, a linear layer over a [12, 4, 4] input. */
function depthwiseCase(seed: number): IntegerModel {
  const b = new IrModelBuilder(seed);
  let x = b.input(1, 12, 9, 'int16');
  const relu6: ConvTarget = { kind: 'activation', act: { ...UNIFORM4, ceiling: true } };
  x = b.conv('conv1', x, { out: 8, kernel: [4, 3], stride: [2, 2], padding: [1, 1], weights: 'int8', target: relu6 });
  x = b.conv('dw1', x, { out: 8, kernel: [3, 3], padding: [1, 1], groups: 8, weights: 'uniform', target: relu6 });
  x = b.conv('pw1', x, { out: 16, kernel: [1, 1], weights: 'apot', target: { kind: 'activation', act: APOT4 } });
  x = b.conv('dw2', x, { out: 16, kernel: [3, 3], stride: [2, 2], padding: [1, 1], groups: 16, weights: 'apot', target: { kind: 'activation', act: { ...APOT4, ceiling: true } } });
  x = b.conv('grouped', x, { out: 12, kernel: [1, 3], padding: [0, 1], groups: 4, weights: 'uniform', target: { kind: 'activation', act: SIGNED4 } });
  x = b.pool('sumpool', 'avgpool', x, [2, 2], [1, 1], [1, 1]);
  x = b.quantize('avgpool.quantize', x, UNIFORM4, true);
  return b.build('depthwise-separable', b.linear('fc', x, 7));
}

/** A ResNet-like net with an int16 residual stream: identity and strided, channel-offset shortcuts, an add of two residual tensors, a maxpool on int16. */
function residualCase(seed: number): IntegerModel {
  const b = new IrModelBuilder(seed);
  const image = b.input(3, 10, 14, 'int8');
  const r0 = b.conv('stem', image, { out: 8, kernel: [3, 3], padding: [1, 1], weights: 'int8', target: { kind: 'residual', bits: 16, relu: true } });
  let a = b.quantize('layer1.input', r0, APOT4, true);
  a = b.conv('layer1.conv1', a, { out: 8, kernel: [3, 3], padding: [1, 1], weights: 'apot', target: { kind: 'activation', act: APOT4 } });
  const identity = { input: r0, stride: 1, channelOffset: 0 };
  const r1 = b.conv('layer1.conv2', a, { out: 8, kernel: [3, 3], padding: [1, 1], weights: 'apot', target: { kind: 'residual', bits: 16, relu: true, ceiling: true, shortcut: identity } });
  a = b.quantize('layer2.input', r1, UNIFORM4, false);
  const a2 = b.conv('layer2.conv1', a, { out: 16, kernel: [3, 3], stride: [2, 2], padding: [1, 1], weights: 'uniform', target: { kind: 'activation', act: UNIFORM4 } });
  const optionA = { input: r1, stride: 2, channelOffset: 4 };
  const r2 = b.conv('layer2.conv2', a2, { out: 16, kernel: [3, 3], padding: [1, 1], weights: 'uniform', target: { kind: 'residual', bits: 16, relu: true, shortcut: optionA } });
  const r3 = b.conv('layer2.branch', a2, { out: 16, kernel: [1, 1], weights: 'apot', target: { kind: 'residual', bits: 16, relu: false, ceiling: true } });
  let r = b.add('layer2.add', r2, r3, { bits: 16, relu: true });
  r = b.pool('maxpool', 'layer2.pool', r, [2, 2]);
  let x = b.globalSumPool('gap', r);
  x = b.quantize('gap.quantize', x, APOT4, true);
  return b.build('residual-int16', b.linear('fc', x, 10));
}

/** An int8 residual stream on a 1-channel input: separable [3,1] / [1,3] kernels, an identity shortcut without relu, an add with ReLU6-like ceiling, a linear layer over the whole [4, 9, 16] map. */
function residualInt8Case(seed: number): IntegerModel {
  const b = new IrModelBuilder(seed);
  const image = b.input(1, 9, 16, 'int8');
  const r0 = b.conv('stem', image, { out: 4, kernel: [3, 3], padding: [1, 1], weights: 'int8', target: { kind: 'residual', bits: 8, relu: true } });
  let a = b.quantize('block.input', r0, APOT4, true);
  a = b.conv('block.conv1', a, { out: 4, kernel: [3, 1], padding: [1, 0], weights: 'uniform', target: { kind: 'activation', act: UNIFORM4 } });
  const r1 = b.conv('block.conv2', a, { out: 4, kernel: [1, 3], padding: [0, 1], weights: 'apot', target: { kind: 'residual', bits: 8, relu: false, shortcut: { input: r0, stride: 1, channelOffset: 0 } } });
  const r2 = b.add('block.add', r1, r0, { bits: 8, relu: true, ceiling: true });
  a = b.quantize('head.input', r2, SIGNED4, false);
  return b.build('residual-int8', b.linear('fc', a, 3, 'apot'));
}

export interface IrCase {
  readonly name: string;
  readonly model: IntegerModel;
}

/** The named synthetic models, the same for the same seed. */
export function irCases(seed = 1): IrCase[] {
  return [denseCase, depthwiseCase, residualCase, residualInt8Case].map((build, i) => {
    const model = build(seed * 16 + i);
    return { name: model.meta.model, model };
  });
}

/** `count` random uint8 images for `model`, back to back (CHW each). */
export function randomImages(model: IntegerModel, count: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const [c, h, w] = inputShape(model);
  return Uint8Array.from({ length: count * c * h * w }, () => rng.int(256));
}
