/**
 * The lowered integer model (src/export/ir.ts) as a TFLite int8 graph (schema.ts tables), for
 * what TFLite's int8 operators express; everything else is refused with a TfliteExportError
 * naming the layer, never approximated silently: non-uniform (APoT) activation codes, activations
 * of fewer than 8 bits (TFLite clamps to int8 only), an int16 residual stream or input, weights
 * outside int8 (EWGS/DoReFa/uniform 8-bit weights are odd integers up to +-255), grouped
 * convolutions that are not depthwise, clipped ReLUs below the top code.
 *
 * Layout: IR tensors are [C, H, W]; TFLite's are NHWC [1, H, W, C]. Weights are written OHWI
 * (CONV_2D) or [1, KH, KW, O] (DEPTHWISE_CONV_2D), int8 with a per-output-channel scale and zero
 * point 0 (a channel with a negative multiplier gets its weights negated); a linear layer is a
 * CONV_2D whose kernel covers its input.
 *
 * Activations: an IR tensor of 8-bit uniform codes k in [minCode, minCode + 255] becomes int8
 * q = k - 128 - minCode (zero point -128 - minCode: real 0 is code 0); residual tensors are int8
 * with zero point 0. TFLite requantizes a conv as
 *   q = clamp(MultiplyByQuantizedMultiplier(acc + b, M) + zp)   (M = s_in * s_w[c] / s_out)
 * while the IR computes code = round(acc * m / 2^(s+f) + bias / 2^f) (rms, then roundToCode); the
 * filter scale s_w[c] is chosen so that TFLite's M is the IR's multiplier (to float32's 24-bit
 * mantissa: QuantizeMultiplier then rounds it to Q31) and b = round(IR offset / M).
 * A quantize op, a sum pool with the quantize of its sums, and the rescale of a shortcut or of an
 * add's inputs are DEPTHWISE_CONV_2D of weight 1 (over the pool's window; 1x1, strided, for a
 * shortcut), whose per-channel scale and bias carry the IR's multiplier and offset; an ADD then
 * adds two tensors of one scale, which TFLite does exactly.
 *
 * Where TFLite and the engine can differ (measured in test/export-tflite.test.ts and
 * bench/tflite-agreement.ts):
 * - the offset: TFLite adds the bias before the multiply, the IR after, so b * M = offset + e with
 *   |e| <= M/2, which moves the rounding point by e: a conv output one step apart wherever
 *   acc * M + offset lies within |e| of a rounding boundary (0.02 to 0.5 % of the outputs of the
 *   W8A8 test model's convolutions); the weight-1 rescales have offsets of 0 or far below M;
 * - the multiplier: 31-bit in the IR, float32 (24 bits) in the file; ties: the IR rounds half up
 *   (rms) and half down (roundToCode), TFLite's reference kernels half away from zero, XNNPACK
 *   (what tfjs-tflite and TFLite's CPU default run) in float32, half to even;
 * - a residual conv: TFLite rounds and clamps the conv's output to int8 before the ADD with the
 *   shortcut, the IR adds in int32 and clamps once;
 * - the logits: TFLite's int8 CONV_2D has no int32 output, so the logits are int8 in units of the
 *   IR's logit unit times 2^k (k from the largest |logit| expected), saturating beyond it;
 * - the input: the image normalization lookup table (the IR's input op) stays outside the model:
 *   the TFLite input is the int8 tensor it produces (index.ts `tfliteInput`).
 */
import { roundToCode } from '../int-ops.js';
import { LoweringError } from '../requant.js';
import type { ActivationQuant, AddOp, ConvOp, IntegerModel, Pair, PoolOp, QuantizeOp, Requant, Shortcut, TensorInfo } from '../ir.js';
import { convOutSize } from '../ir.js';
import { weightValues } from '../engine.js';
import { Activation, BuiltinOperator, BuiltinOptionsType, type ModelDef, type OperatorDef, type OptionsDef, Padding, type QuantParams, type TensorDef, TensorType } from './schema.js';

/** A model TFLite int8 cannot express (a LoweringError: the CLI's exit 3, "a model that cannot be exported"). */
export class TfliteExportError extends LoweringError {
  override name = 'TfliteExportError';
}

export interface TfliteConvertOptions {
  /** Largest |logit| expected, in the IR's logit units (sets the int8 logits' unit); default: the logits tensor's bound. */
  readonly logitsMaxAbs?: number;
  /** Make every IR tensor a model output too (to compare the interpreter with the engine tensor by tensor). */
  readonly traceOutputs?: boolean;
}

/** Where an IR tensor went: its TFLite tensor's name and zero point (int8 q = IR value + zeroPoint; the logits: value / 2^logitShift). */
export interface TracedTensor {
  readonly irTensor: number;
  /** Its TFLite tensor (index and name). */
  readonly tensor: number;
  readonly name: string;
  readonly zeroPoint: number;
}

export interface TfliteGraph {
  readonly def: ModelDef;
  /** Real value of int8 logit 1 (the output's scale; zero point 0). */
  readonly logitScale: number;
  /** The int8 logits are the IR's int32 logits / 2^logitShift, rounded. */
  readonly logitShift: number;
  /** Notes for the export summary (what may differ from the engine). */
  readonly notes: readonly string[];
  /** Every IR tensor that has a TFLite tensor, in IR order. */
  readonly traced: readonly TracedTensor[];
  /** The TFLite operators of each IR op (a sum pool's include its quantize), to run one op alone (`isolatedOp`). */
  readonly opRanges: readonly OpRange[];
}

export interface OpRange {
  readonly name: string;
  /** IR tensors read and written. */
  readonly inputs: readonly number[];
  readonly output: number;
  /** operators[first .. end) of the model. */
  readonly first: number;
  readonly end: number;
}

interface Quant {
  readonly scale: number;
  readonly zeroPoint: number;
}

const f32 = Math.fround;

function fail(what: string, why: string): never {
  throw new TfliteExportError(`tflite export: ${what}: ${why}`);
}

/** The padding TFLite's SAME gives along one axis equals the IR's explicit one (in output size and in the rows read). */
function sameMatches(size: number, kernel: number, stride: number, pad: number): boolean {
  const out = convOutSize(size, kernel, stride, pad);
  const total = Math.max((Math.ceil(size / stride) - 1) * stride + kernel - size, 0);
  const needed = Math.max((out - 1) * stride + kernel - size - pad, 0);
  return out === Math.ceil(size / stride) && Math.floor(total / 2) === pad && total - pad === needed;
}

function int32Bytes(values: readonly number[]): Uint8Array {
  return new Uint8Array(Int32Array.from(values).buffer);
}

/** Builds the TFLite graph op by op; IR tensor i becomes TFLite tensor tfl[i]. */
class GraphWriter {
  readonly tensors: TensorDef[] = [];
  readonly buffers: Uint8Array[] = [new Uint8Array(0)];
  readonly operators: OperatorDef[] = [];
  readonly notes = new Set<string>();
  readonly #tfl = new Map<number, number>();
  readonly #quant = new Map<number, Quant>();
  readonly model: IntegerModel;

  constructor(model: IntegerModel) {
    this.model = model;
  }

  info(i: number): TensorInfo {
    return this.model.tensors[i];
  }

  quantOf(i: number): Quant {
    const q = this.#quant.get(i);
    if (!q) fail(this.info(i).name, 'used before it is computed');
    return q;
  }

  tflIndex(i: number): number {
    return this.#tfl.get(i)!;
  }

  traced(): TracedTensor[] {
    return [...this.#tfl].sort((a, b) => a[0] - b[0]).map(([i, t]) => ({ irTensor: i, tensor: t, name: this.tensors[t].name, zeroPoint: this.#quant.get(i)!.zeroPoint }));
  }

  /** A non-constant int8 tensor. */
  addActivation(name: string, shape: readonly number[], q: Quant): number {
    this.tensors.push({ name, shape, type: TensorType.INT8, buffer: 0, quant: { scale: [f32(q.scale)], zeroPoint: [q.zeroPoint], dimension: 0 } });
    return this.tensors.length - 1;
  }

  /** The TFLite tensor of IR tensor i (NHWC int8). */
  defineIr(i: number, q: Quant): number {
    const t = this.info(i);
    const index = this.addActivation(t.name, [1, t.shape[1], t.shape[2], t.shape[0]], q);
    this.#tfl.set(i, index);
    this.#quant.set(i, q);
    return index;
  }

  addConstant(name: string, shape: readonly number[], type: number, data: Uint8Array, quant: QuantParams | null): number {
    this.buffers.push(data);
    this.tensors.push({ name, shape, type, buffer: this.buffers.length - 1, quant });
    return this.tensors.length - 1;
  }

  addOp(opcode: OperatorDef['opcode'], inputs: readonly number[], outputs: readonly number[], options: OptionsDef = { type: BuiltinOptionsType.NONE, fields: [] }): void {
    this.operators.push({ opcode, inputs, outputs, options });
  }

  /** Zero padding of an NHWC tensor (PAD fills with the zero point: the code of real 0). */
  pad(name: string, input: number, shape: readonly number[], pads: readonly (readonly [number, number])[], q: Quant): number {
    const paddings = this.addConstant(`${name}.paddings`, [4, 2], TensorType.INT32, int32Bytes(pads.flat()), null);
    const out = this.addActivation(`${name}.padded`, shape.map((d, k) => d + pads[k][0] + pads[k][1]), q);
    this.addOp(BuiltinOperator.PAD, [input, paddings], [out]);
    return out;
  }
}

/** Real value of int8 activation 1 and its zero point for an 8-bit uniform activation, or the reason it is not one. */
function activationQuant(what: string, q: ActivationQuant, scale: number): { quant: Quant; relu: boolean; fracBits: number } {
  const rule = q.rule;
  if (rule.kind === 'thresholds') fail(what, 'its activation codes are thresholds of a non-uniform (APoT) grid; TFLite int8 tensors are uniform');
  const levels = rule.maxCode - rule.minCode + 1;
  if (levels < 256) fail(what, `its activations have ${Math.log2(levels).toFixed(0)}-bit codes (${rule.minCode}..${rule.maxCode}); TFLite int8 clamps to 8 bits only: export a model with 8-bit activations`);
  if (levels > 256) fail(what, `its activation codes ${rule.minCode}..${rule.maxCode} do not fit 8 bits`);
  const code = (v: number): number => roundToCode(v, rule.fracBits, rule.minCode, rule.maxCode);
  const floor = q.relu ? code(q.zeroPoint) : rule.minCode;
  if (floor !== rule.minCode && floor !== 0) fail(what, `its ReLU floor is code ${floor}, neither real 0 nor the lowest code`);
  if (q.ceiling !== null && code(q.ceiling) < rule.maxCode) fail(what, `its clipped ReLU (ceiling code ${code(q.ceiling)} below ${rule.maxCode}) has no TFLite int8 form`);
  return { quant: { scale: scale > 0 ? scale : 1, zeroPoint: -128 - rule.minCode }, relu: floor !== rule.minCode, fracBits: rule.fracBits };
}

/** The multiplier and additive offset of one channel in units of the output's int8 steps: out = round(acc * M + B). */
function channelAffine(r: Requant, c: number, fracBits: number, extraShift: number, codes: boolean): { m: number; b: number } {
  const m = r.mult[c] / 2 ** (r.shift[c] + fracBits + extraShift);
  // roundToCode(v, f) of an integer v = rms(..) + bias is floor(x + bias / 2^f + 1/2 - 2^-(f+1)) for f >= 1.
  const tie = codes && fracBits > 0 ? 2 ** -(fracBits + 1) : 0;
  return { m, b: r.bias[c] / 2 ** (fracBits + extraShift) - tie };
}

/** out[o] = round(acc * m + b) in the output's int8 steps, per output channel. */
interface Affine {
  readonly m: number;
  readonly b: number;
}

/** One CONV_2D or DEPTHWISE_CONV_2D (a linear layer, or a per-channel rescale, sum pool or shortcut as a depthwise conv). */
interface ConvEmit {
  readonly name: string;
  /** The IR tensor read (its TFLite tensor and zero point) and the TFLite tensor written. */
  readonly input: number;
  readonly output: number;
  readonly outChannels: number;
  readonly depthwise: boolean;
  /** Integer weight of output channel o, input channel c of its group, kernel row i, column j. */
  readonly weight: (o: number, c: number, i: number, j: number) => number;
  readonly kernel: Pair;
  readonly stride: Pair;
  readonly padding: Pair;
  readonly affine: readonly Affine[];
  readonly out: Quant;
  readonly relu: boolean;
}

/** The int8 weights in TFLite's layout (OHWI, or [1, KH, KW, O] depthwise), output channel o times signs[o]. */
function convWeights(e: ConvEmit, inChannels: number, signs: readonly number[]): { data: Uint8Array; shape: number[] } {
  const [kh, kw] = e.kernel;
  const cin = e.depthwise ? 1 : inChannels;
  const out = new Int8Array(e.outChannels * cin * kh * kw);
  for (let o = 0; o < e.outChannels; o++) {
    for (let c = 0; c < cin; c++) {
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          const v = signs[o] * e.weight(o, c, i, j);
          if (v < -128 || v > 127) fail(e.name, `weight value ${v} of output channel ${o} (negated where its multiplier is negative) does not fit int8 (-128..127)`);
          out[e.depthwise ? (i * kw + j) * e.outChannels + o : ((o * kh + i) * kw + j) * cin + c] = v;
        }
      }
    }
  }
  return { data: new Uint8Array(out.buffer), shape: e.depthwise ? [1, kh, kw, e.outChannels] : [e.outChannels, kh, kw, cin] };
}

function emitConv(w: GraphWriter, e: ConvEmit): void {
  const inInfo = w.info(e.input);
  const inQ = w.quantOf(e.input);
  const [channels, h, wd] = inInfo.shape;
  const [scales, bias, signs]: number[][] = [[], [], []];
  e.affine.forEach(({ m, b }, c) => {
    if (m === 0) fail(e.name, `channel ${c} has multiplier 0; TFLite needs positive scales`);
    // A negative multiplier (a negative batch-norm scale) is the channel's weights negated: TFLite's scales are positive.
    signs.push(Math.sign(m));
    scales.push(f32((Math.abs(m) * e.out.scale) / inQ.scale));
    const folded = Math.round(b / Math.abs(m));
    if (Math.abs(folded) >= 2 ** 31) fail(e.name, `channel ${c}'s offset is ${folded} accumulator units, beyond int32`);
    bias.push(folded);
  });
  const { data, shape } = convWeights(e, channels, signs);
  const zeros = scales.map(() => 0);
  const filter = w.addConstant(`${e.name}.weight`, shape, TensorType.INT8, data, { scale: scales, zeroPoint: zeros, dimension: e.depthwise ? 3 : 0 });
  const biasScales = scales.map((s) => f32(f32(inQ.scale) * s));
  const biasTensor = w.addConstant(`${e.name}.bias`, [e.outChannels], TensorType.INT32, int32Bytes(bias), { scale: biasScales, zeroPoint: zeros, dimension: 0 });
  let input = w.tflIndex(e.input);
  const [ph, pw] = e.padding;
  const padded = ph > 0 || pw > 0;
  const same = padded && sameMatches(h, e.kernel[0], e.stride[0], ph) && sameMatches(wd, e.kernel[1], e.stride[1], pw);
  if (padded && !same) input = w.pad(e.name, input, [1, h, wd, channels], [[0, 0], [ph, ph], [pw, pw], [0, 0]], inQ);
  const fused = e.relu ? Activation.RELU : Activation.NONE;
  const padding = same ? Padding.SAME : Padding.VALID;
  const fields: OptionsDef['fields'] = e.depthwise
    ? [[0, 'int8', padding], [1, 'int32', e.stride[1]], [2, 'int32', e.stride[0]], [3, 'int32', 1], [4, 'int8', fused], [5, 'int32', 1], [6, 'int32', 1]]
    : [[0, 'int8', padding], [1, 'int32', e.stride[1]], [2, 'int32', e.stride[0]], [3, 'int8', fused], [4, 'int32', 1], [5, 'int32', 1]];
  const options = { type: e.depthwise ? BuiltinOptionsType.DepthwiseConv2DOptions : BuiltinOptionsType.Conv2DOptions, fields };
  w.addOp(e.depthwise ? BuiltinOperator.DEPTHWISE_CONV_2D : BuiltinOperator.CONV_2D, [input, filter, biasTensor], [e.output], options);
}

interface ConvTarget {
  readonly out: Quant;
  readonly relu: boolean;
  readonly fracBits: number;
  readonly extraShift: number;
  readonly codes: boolean;
}

function convTarget(w: GraphWriter, op: ConvOp, logitShift: number): ConvTarget {
  const e = op.epilogue;
  const t = w.info(op.output);
  if (e.kind === 'activation') {
    const a = activationQuant(op.name, e, t.scale);
    return { out: a.quant, relu: a.relu, fracBits: a.fracBits, extraShift: 0, codes: true };
  }
  if (e.kind === 'residual') {
    residualBitsOk(op.name, e.bits, e.ceiling);
    return { out: { scale: t.scale, zeroPoint: 0 }, relu: e.relu, fracBits: 0, extraShift: 0, codes: false };
  }
  return { out: { scale: t.scale * 2 ** logitShift, zeroPoint: 0 }, relu: false, fracBits: 0, extraShift: logitShift, codes: false };
}

function residualBitsOk(name: string, bits: number, ceiling: number | null): void {
  if (bits !== 8) fail(name, `its output is an int${bits} residual stream; TFLite int8 needs an 8-bit one: lower with --residual-bits 8 (deploy.residualBits: 8)`);
  if (ceiling !== null && ceiling < 127) fail(name, `its clipped residual (ceiling ${ceiling}) has no TFLite int8 form`);
}

const ONE = (): number => 1;

/**
 * An IR tensor times mult / 2^shift, rounded, in the residual units of `out` (the engine's rms of
 * an add input or a shortcut), subsampled by `stride`: a 1x1 DEPTHWISE_CONV_2D of weight 1, so
 * that the ADD after it adds two tensors of one scale (exactly, in TFLite).
 */
function rescaled(w: GraphWriter, name: string, input: number, mult: number, shift: number, stride: number, out: Quant): number {
  const [c, h, wd] = w.info(input).shape;
  const output = w.addActivation(name, [1, Math.ceil(h / stride), Math.ceil(wd / stride), c], out);
  const m = mult / 2 ** shift;
  emitConv(w, { name, input, output, outChannels: c, depthwise: true, weight: ONE, kernel: [1, 1], stride: [stride, stride], padding: [0, 0], affine: Array.from({ length: c }, () => ({ m, b: 0 })), out, relu: false });
  return output;
}

/** The shortcut of a residual conv as an NHWC tensor of the conv's output shape and scale: rescaled and subsampled, zero channels padded (option A). */
function shortcutTensor(w: GraphWriter, op: ConvOp, s: Shortcut, outShape: readonly number[], out: Quant): number {
  let x = rescaled(w, `${op.name}.shortcut`, s.input, s.mult, s.shift, s.stride, out);
  const shape = w.tensors[x].shape;
  if (shape[1] !== outShape[1] || shape[2] !== outShape[2]) fail(op.name, `its shortcut is ${shape[1]}x${shape[2]}, the output ${outShape[1]}x${outShape[2]}`);
  const after = outShape[3] - shape[3] - s.channelOffset;
  if (s.channelOffset < 0 || after < 0) fail(op.name, `its shortcut's channels (${shape[3]} at offset ${s.channelOffset}) exceed the output's ${outShape[3]}`);
  if (s.channelOffset > 0 || after > 0) x = w.pad(`${op.name}.shortcut`, x, shape, [[0, 0], [0, 0], [0, 0], [s.channelOffset, after]], out);
  return x;
}

function addOptions(relu: boolean): OptionsDef {
  return { type: BuiltinOptionsType.AddOptions, fields: [[0, 'int8', relu ? Activation.RELU : Activation.NONE]] };
}

function convOp(w: GraphWriter, op: ConvOp, logitShift: number): void {
  const depthwise = op.groups > 1 && op.groups === op.inChannels && op.groups === op.outChannels;
  if (op.groups > 1 && !depthwise) fail(op.name, `a grouped convolution (${op.groups} groups) that is not depthwise has no TFLite operator`);
  const target = convTarget(w, op, logitShift);
  const affine = Array.from({ length: op.outChannels }, (_, c) => channelAffine(op.requant, c, target.fracBits, target.extraShift, target.codes));
  const values = weightValues(op);
  const cin = op.inChannels / op.groups;
  const [kh, kw] = op.kernel;
  const weight = (o: number, c: number, i: number, j: number): number => values[((o * cin + c) * kh + i) * kw + j];
  const out = w.info(op.output);
  const outShape = [1, out.shape[1], out.shape[2], out.shape[0]];
  const e = op.epilogue;
  const shortcut = e.kind === 'residual' ? e.shortcut : null;
  const output = shortcut ? w.addActivation(`${op.name}.conv`, outShape, target.out) : w.defineIr(op.output, target.out);
  const { kernel, stride, padding } = op;
  emitConv(w, { name: op.name, input: op.input, output, outChannels: op.outChannels, depthwise, weight, kernel, stride, padding, affine, out: target.out, relu: target.relu && !shortcut });
  if (shortcut) {
    const sc = shortcutTensor(w, op, shortcut, outShape, target.out);
    w.addOp(BuiltinOperator.ADD, [output, sc], [w.defineIr(op.output, target.out)], addOptions(target.relu));
    w.notes.add('a residual conv is a CONV_2D rounded and clamped to int8, then an ADD of its rescaled shortcut (the engine adds before it clamps)');
  }
}

/**
 * A quantize (per channel or per tensor), or a sum pool and the quantize of its sums: a
 * DEPTHWISE_CONV_2D of weight 1 over the pool's window (1x1 for a quantize alone), whose
 * per-channel scale and bias carry the IR's multiplier and offset.
 */
function requantize(w: GraphWriter, op: QuantizeOp, pool: PoolOp | null): void {
  const a = activationQuant(op.name, op, w.info(op.output).scale);
  const source = pool ? pool.input : op.input;
  const channels = w.info(source).shape[0];
  const affine = Array.from({ length: channels }, (_, c) => channelAffine(op.requant, op.requant.mult.length > 1 ? c : 0, a.fracBits, 0, true));
  const window = pool ?? { kernel: [1, 1] as const, stride: [1, 1] as const, padding: [0, 0] as const };
  const { kernel, stride, padding } = window;
  emitConv(w, { name: `${op.name}.quantize`, input: source, output: w.defineIr(op.output, a.quant), outChannels: channels, depthwise: true, weight: ONE, kernel, stride, padding, affine, out: a.quant, relu: a.relu });
}

function maxPool(w: GraphWriter, op: PoolOp): void {
  const [, h, wd] = w.info(op.input).shape;
  const padded = op.padding[0] > 0 || op.padding[1] > 0;
  if (padded && !(sameMatches(h, op.kernel[0], op.stride[0], op.padding[0]) && sameMatches(wd, op.kernel[1], op.stride[1], op.padding[1]))) {
    fail(op.name, `its padding [${op.padding.join(', ')}] is not TFLite's SAME padding`);
  }
  const q = w.quantOf(op.input);
  const fields: OptionsDef['fields'] = [[0, 'int8', padded ? Padding.SAME : Padding.VALID], [1, 'int32', op.stride[1]], [2, 'int32', op.stride[0]], [3, 'int32', op.kernel[1]], [4, 'int32', op.kernel[0]], [5, 'int8', Activation.NONE]];
  w.addOp(BuiltinOperator.MAX_POOL_2D, [w.tflIndex(op.input)], [w.defineIr(op.output, q)], { type: BuiltinOptionsType.Pool2DOptions, fields });
}

function addOp(w: GraphWriter, op: AddOp): void {
  residualBitsOk(op.name, op.bits, op.ceiling);
  const out = { scale: w.info(op.output).scale, zeroPoint: 0 };
  const a = rescaled(w, `${op.name}.a`, op.a.input, op.a.mult, op.a.shift, 1, out);
  const b = rescaled(w, `${op.name}.b`, op.b.input, op.b.mult, op.b.shift, 1, out);
  w.addOp(BuiltinOperator.ADD, [a, b], [w.defineIr(op.output, out)], addOptions(op.relu));
}

/** The int8 logits' unit: 2^k IR logit units, the smallest k that keeps `maxAbs` within 127. */
function logitShiftFor(maxAbs: number): number {
  let k = 0;
  while (maxAbs / 2 ** k > 127) k++;
  return k;
}

/** The TFLite graph of an integer model; throws TfliteExportError naming the layer for what TFLite int8 cannot express. */
export function convertToTflite(model: IntegerModel, opts: TfliteConvertOptions = {}): TfliteGraph {
  const w = new GraphWriter(model);
  const logits = model.tensors[model.output];
  const logitShift = logitShiftFor(opts.logitsMaxAbs ?? Math.max(Math.abs(logits.range[0]), Math.abs(logits.range[1])));
  const consumers = (t: number) => model.ops.filter((o) => (o.kind === 'add' ? [o.a.input, o.b.input] : o.kind === 'input' ? [] : [o.input]).includes(t) || (o.kind === 'conv' && o.epilogue.kind === 'residual' && o.epilogue.shortcut?.input === t));
  let graphInput = -1;
  const opRanges: OpRange[] = [];
  for (const op of model.ops) {
    const first = w.operators.length;
    switch (op.kind) {
      case 'input': {
        const t = model.tensors[op.output];
        if (t.dtype !== 'int8') fail('input', `the normalized image is ${t.dtype}; TFLite int8 needs an int8 input: lower with --input-bits 8`);
        graphInput = w.defineIr(op.output, { scale: t.scale > 0 ? t.scale : 1, zeroPoint: 0 });
        break;
      }
      case 'conv':
        convOp(w, op, logitShift);
        break;
      case 'quantize': {
        const producer = model.ops.find((o) => o.kind !== 'input' && o.output === op.input);
        if (producer?.kind !== 'sumpool') requantize(w, op, null); // else written with its sum pool
        break;
      }
      case 'sumpool': {
        const next = consumers(op.output);
        if (next.length !== 1 || next[0].kind !== 'quantize') fail(op.name, 'a sum pool whose sums are not quantized once, as the lowering emits it, has no TFLite int8 form');
        requantize(w, next[0], op);
        break;
      }
      case 'maxpool':
        maxPool(w, op);
        break;
      case 'add':
        addOp(w, op);
        break;
    }
    if (w.operators.length > first && op.kind !== 'input') {
      const inputs = op.kind === 'add' ? [op.a.input, op.b.input] : op.kind === 'conv' && op.epilogue.kind === 'residual' && op.epilogue.shortcut ? [op.input, op.epilogue.shortcut.input] : [op.input];
      const output = op.kind === 'sumpool' ? consumers(op.output)[0].output : op.output;
      opRanges.push({ name: op.name, inputs, output, first, end: w.operators.length });
    }
  }
  const output = w.tflIndex(model.output);
  if (logitShift > 0) w.notes.add(`the logits are int8 in units of 2^${logitShift} engine logit units, saturating at +-127`);
  const def: ModelDef = {
    description: `tinyquant ${model.meta.model} ${model.meta.method} W${model.meta.wbits}A${model.meta.abits}`,
    tensors: w.tensors,
    buffers: w.buffers,
    operators: w.operators,
    inputs: [graphInput],
    outputs: opts.traceOutputs ? [...new Set([...w.traced().map((t) => w.tflIndex(t.irTensor)).filter((t) => t !== graphInput), output])] : [output],
  };
  return { def, logitScale: f32(logits.scale * 2 ** logitShift), logitShift, notes: [...w.notes], traced: w.traced(), opRanges };
}

/** A model of one IR op's TFLite operators alone: its inputs and output are the TFLite tensors of the op's IR inputs and output. */
export function isolatedOp(graph: TfliteGraph, range: OpRange): ModelDef {
  const tfl = (ir: number): number => graph.traced.find((x) => x.irTensor === ir)!.tensor;
  return { ...graph.def, operators: graph.def.operators.slice(range.first, range.end), inputs: [...new Set(range.inputs)].map(tfl), outputs: [tfl(range.output)] };
}
