/**
 * The lowered integer model (src/export/ir.ts) as a TFLite int8 graph (schema.ts tables), for
 * what TFLite's int8 operators express; everything else is refused with a TfliteExportError
 * naming the layer, never approximated silently.
 *
 * Layout: IR tensors are [C, H, W]; TFLite's are NHWC [1, H, W, C]. Weights are written OHWI
 * (CONV_2D) or [1, KH, KW, O] (DEPTHWISE_CONV_2D), int8 with a per-output-channel scale and zero
 * point 0; a linear layer is a CONV_2D whose kernel covers its input.
 *
 * Activations: an IR activation tensor of 8-bit uniform codes k in [minCode, minCode + 255]
 * becomes int8 q = k - 128 - minCode (zero point -128 - minCode, so real 0 is code 0); residual
 * tensors are int8 with zero point 0. TFLite requantizes a conv as
 *   q = clamp(MultiplyByQuantizedMultiplier(acc + b, M) + zp)   (M = s_in * s_w[c] / s_out)
 * while the IR computes code = round(acc * m / 2^(s+f) + bias / 2^f) (rms, then roundToCode); the
 * filter scale s_w[c] is chosen so that TFLite's M is the IR's multiplier (to float32's 24-bit
 * mantissa: QuantizeMultiplier then rounds it to Q31) and b = round(IR bias / M).
 *
 * Where TFLite and the engine can differ (measured in test/export-tflite.test.ts):
 * - the bias: TFLite adds it before the multiply, the IR after, so b * M = bias + e with |e| <= M/2,
 *   which moves the rounding point of a value by e (an output one code apart when acc * M + bias
 *   lies within |e| of a rounding boundary);
 * - the multiplier: 31-bit in the IR, float32 (24 bits) in the TFLite file;
 * - ties: the IR rounds half up (rms) and half down (roundToCode), TFLite half away from zero
 *   (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT);
 * - a residual conv: TFLite rounds and clamps the conv's output to int8 before the ADD with the
 *   shortcut, the IR adds in int32 and clamps once; ADD rescales both inputs from their tensor
 *   scales (20-bit left shift, three roundings) where the IR has one rms per input;
 * - the logits: TFLite's int8 CONV_2D has no int32 output, so the logits are int8 in units of the
 *   IR's logit unit times 2^k (k from the calibrated largest |logit|), saturating beyond it;
 * - the input: the image normalization lookup table (the IR's input op) stays outside the model:
 *   the TFLite input is the int8 tensor it produces (`inputLut` gives it to the caller).
 */
import { roundToCode } from '../int-ops.js';
import type { ActivationQuant, AddOp, ConvOp, IntegerModel, PoolOp, QuantizeOp, Requant, TensorInfo } from '../ir.js';
import { convOutSize } from '../ir.js';
import { weightValues } from '../engine.js';
import { Activation, BuiltinOperator, BuiltinOptionsType, type ModelDef, type OperatorDef, type OptionsDef, Padding, type QuantParams, type TensorDef, TensorType } from './schema.js';

export class TfliteExportError extends Error {}

export interface TfliteConvertOptions {
  /** Largest |logit| expected, in the IR's logit units (sets the int8 logits' unit); default: the logits tensor's bound. */
  readonly logitsMaxAbs?: number;
}

export interface TfliteGraph {
  readonly def: ModelDef;
  /** Real value of int8 logit 1 (the output's scale; zero point 0). */
  readonly logitScale: number;
  /** The int8 logits are the IR's int32 logits / 2^logitShift, rounded. */
  readonly logitShift: number;
  /** Notes for the export summary (what may differ from the engine). */
  readonly notes: readonly string[];
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

/** The int8 weights in TFLite's layout, output channel o times signs[o]. */
function convWeights(op: ConvOp, depthwise: boolean, signs: readonly number[]): { data: Uint8Array; shape: number[] } {
  const values = weightValues(op);
  const [kh, kw] = op.kernel;
  const cin = op.inChannels / op.groups;
  const out = new Int8Array(values.length);
  for (let o = 0; o < op.outChannels; o++) {
    for (let c = 0; c < cin; c++) {
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          const v = signs[o] * values[((o * cin + c) * kh + i) * kw + j];
          if (v < -128 || v > 127) fail(op.name, `weight value ${v} of output channel ${o} (negated for its negative multiplier where ${v} > 0) does not fit int8`);
          out[depthwise ? (i * kw + j) * op.outChannels + o : ((o * kh + i) * kw + j) * cin + c] = v;
        }
      }
    }
  }
  return { data: new Uint8Array(out.buffer), shape: depthwise ? [1, kh, kw, op.outChannels] : [op.outChannels, kh, kw, cin] };
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
    if (e.bits !== 8) fail(op.name, `its output is an int${e.bits} residual stream; TFLite int8 needs an 8-bit one: lower with --residual-bits 8 (deploy.residualBits: 8)`);
    if (e.ceiling !== null && e.ceiling < 127) fail(op.name, `its clipped residual (ceiling ${e.ceiling}) has no TFLite int8 form`);
    return { out: { scale: t.scale, zeroPoint: 0 }, relu: e.relu, fracBits: 0, extraShift: 0, codes: false };
  }
  return { out: { scale: t.scale * 2 ** logitShift, zeroPoint: 0 }, relu: false, fracBits: 0, extraShift: logitShift, codes: false };
}

/** The shortcut of a residual conv as an NHWC tensor of the conv's output shape: strided slice (option A), zero channels padded. */
function shortcutTensor(w: GraphWriter, op: ConvOp, outShape: readonly number[]): number {
  const e = op.epilogue;
  if (e.kind !== 'residual' || !e.shortcut) throw new Error('unreachable');
  const s = e.shortcut;
  const sc = w.info(s.input);
  const q = w.quantOf(s.input);
  let x = w.tflIndex(s.input);
  let shape = [1, sc.shape[1], sc.shape[2], sc.shape[0]];
  if (s.stride > 1) {
    const consts = (what: string, v: number[]) => w.addConstant(`${op.name}.shortcut.${what}`, [4], TensorType.INT32, int32Bytes(v), null);
    const [begin, end, strides] = [consts('begin', [0, 0, 0, 0]), consts('end', shape), consts('strides', [1, s.stride, s.stride, 1])];
    shape = [1, Math.ceil(shape[1] / s.stride), Math.ceil(shape[2] / s.stride), shape[3]];
    const sliced = w.addActivation(`${op.name}.shortcut`, shape, q);
    w.addOp(BuiltinOperator.STRIDED_SLICE, [x, begin, end, strides], [sliced], { type: BuiltinOptionsType.StridedSliceOptions, fields: [] });
    x = sliced;
  }
  if (shape[1] !== outShape[1] || shape[2] !== outShape[2]) fail(op.name, `its shortcut is ${shape[1]}x${shape[2]}, the output ${outShape[1]}x${outShape[2]}`);
  const after = outShape[3] - shape[3] - s.channelOffset;
  if (s.channelOffset < 0 || after < 0) fail(op.name, `its shortcut's channels (${shape[3]} at offset ${s.channelOffset}) exceed the output's ${outShape[3]}`);
  if (s.channelOffset > 0 || after > 0) x = w.pad(`${op.name}.shortcut`, x, shape, [[0, 0], [0, 0], [0, 0], [s.channelOffset, after]], q);
  return x;
}

function addOptions(relu: boolean): OptionsDef {
  return { type: BuiltinOptionsType.AddOptions, fields: [[0, 'int8', relu ? Activation.RELU : Activation.NONE]] };
}

function convOp(w: GraphWriter, op: ConvOp, logitShift: number): void {
  const depthwise = op.groups > 1 && op.groups === op.inChannels && op.groups === op.outChannels;
  if (op.groups > 1 && !depthwise) fail(op.name, `a grouped convolution (${op.groups} groups) that is not depthwise has no TFLite operator`);
  const inInfo = w.info(op.input);
  const inQ = w.quantOf(op.input);
  const [, h, wd] = inInfo.shape;
  const target = convTarget(w, op, logitShift);
  const [scales, bias, signs]: number[][] = [[], [], []];
  for (let c = 0; c < op.outChannels; c++) {
    const { m, b } = channelAffine(op.requant, c, target.fracBits, target.extraShift, target.codes);
    if (m === 0) fail(op.name, `channel ${c} has multiplier 0; TFLite needs positive scales`);
    // A negative multiplier (a negative batch-norm scale) is the channel's weights negated: TFLite's scales are positive.
    signs.push(Math.sign(m));
    scales.push(f32((Math.abs(m) * target.out.scale) / inQ.scale));
    const folded = Math.round(b / Math.abs(m));
    if (Math.abs(folded) >= 2 ** 31) fail(op.name, `channel ${c}'s bias ${op.requant.bias[c]} is ${folded} accumulator units, beyond int32`);
    bias.push(folded);
  }
  const { data, shape } = convWeights(op, depthwise, signs);
  const filter = w.addConstant(`${op.name}.weight`, shape, TensorType.INT8, data, { scale: scales, zeroPoint: scales.map(() => 0), dimension: depthwise ? 3 : 0 });
  const biasScales = scales.map((s) => f32(f32(inQ.scale) * s));
  const biasTensor = w.addConstant(`${op.name}.bias`, [op.outChannels], TensorType.INT32, int32Bytes(bias), { scale: biasScales, zeroPoint: bias.map(() => 0), dimension: 0 });
  let input = w.tflIndex(op.input);
  const [ph, pw] = op.padding;
  const same = (ph > 0 || pw > 0) && sameMatches(h, op.kernel[0], op.stride[0], ph) && sameMatches(wd, op.kernel[1], op.stride[1], pw);
  if ((ph > 0 || pw > 0) && !same) input = w.pad(op.name, input, [1, h, wd, inInfo.shape[0]], [[0, 0], [ph, ph], [pw, pw], [0, 0]], inQ);
  const out = w.info(op.output);
  const outShape = [1, out.shape[1], out.shape[2], out.shape[0]];
  const e = op.epilogue;
  const shortcut = e.kind === 'residual' && e.shortcut !== null;
  const fused = target.relu && !shortcut ? Activation.RELU : Activation.NONE;
  const convOut = shortcut ? w.addActivation(`${op.name}.conv`, outShape, target.out) : w.defineIr(op.output, target.out);
  const fields: OptionsDef['fields'] = depthwise
    ? [[0, 'int8', same ? Padding.SAME : Padding.VALID], [1, 'int32', op.stride[1]], [2, 'int32', op.stride[0]], [3, 'int32', 1], [4, 'int8', fused], [5, 'int32', 1], [6, 'int32', 1]]
    : [[0, 'int8', same ? Padding.SAME : Padding.VALID], [1, 'int32', op.stride[1]], [2, 'int32', op.stride[0]], [3, 'int8', fused], [4, 'int32', 1], [5, 'int32', 1]];
  const options = { type: depthwise ? BuiltinOptionsType.DepthwiseConv2DOptions : BuiltinOptionsType.Conv2DOptions, fields };
  w.addOp(depthwise ? BuiltinOperator.DEPTHWISE_CONV_2D : BuiltinOperator.CONV_2D, [input, filter, biasTensor], [convOut], options);
  if (shortcut) {
    const sc = shortcutTensor(w, op, outShape);
    w.addOp(BuiltinOperator.ADD, [convOut, sc], [w.defineIr(op.output, target.out)], addOptions(target.relu));
    w.notes.add('a residual conv is a CONV_2D rounded to int8, then an ADD with its shortcut (the engine adds before rounding)');
  }
}

/** A per-tensor quantize (or a global average pool and its quantize): a QUANTIZE (MEAN) whose output scale carries the IR's multiplier. */
function requantize(w: GraphWriter, op: QuantizeOp, source: number, input: number, count: number): void {
  if (op.requant.mult.length > 1) fail(op.name, 'a per-channel requantization of a tensor has no TFLite int8 operator (QUANTIZE and MEAN rescale per tensor)');
  const a = activationQuant(op.name, op, w.info(op.output).scale);
  if (a.relu) fail(op.name, 'a ReLU floor at real 0 above its lowest code has no fused form on QUANTIZE');
  const { m, b } = channelAffine(op.requant, 0, a.fracBits, 0, true);
  if (Math.round(b) !== 0) fail(op.name, `its offset (${b.toFixed(3)} codes) has no place in TFLite's QUANTIZE (zero points are shared by the tensor's consumers)`);
  if (Math.abs(b) > 1e-9) w.notes.add(`${op.name}: its rounding offset of ${b.toFixed(3)} codes is dropped (ties may go the other way)`);
  const inQ = w.quantOf(source);
  const quant = { scale: inQ.scale / (m * count), zeroPoint: a.quant.zeroPoint };
  if (count === 1) {
    w.addOp(BuiltinOperator.QUANTIZE, [input], [w.defineIr(op.output, quant)]);
    return;
  }
  const axes = w.addConstant(`${op.name}.axes`, [2], TensorType.INT32, int32Bytes([1, 2]), null);
  w.addOp(BuiltinOperator.MEAN, [input, axes], [w.defineIr(op.output, quant)], { type: BuiltinOptionsType.ReducerOptions, fields: [[0, 'bool', 1]] });
  w.notes.add('the global average pool is TFLite MEAN (its rounding of the mean may differ from the engine\'s one rounding of the sum)');
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
  if (op.bits !== 8) fail(op.name, `its output is an int${op.bits} residual stream; TFLite int8 needs an 8-bit one: lower with --residual-bits 8 (deploy.residualBits: 8)`);
  if (op.ceiling !== null && op.ceiling < 127) fail(op.name, `its clipped residual (ceiling ${op.ceiling}) has no TFLite int8 form`);
  const scale = w.quantOf(op.a.input).scale / (op.a.mult / 2 ** op.a.shift);
  w.addOp(BuiltinOperator.ADD, [w.tflIndex(op.a.input), w.tflIndex(op.b.input)], [w.defineIr(op.output, { scale, zeroPoint: 0 })], addOptions(op.relu));
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
  for (const op of model.ops) {
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
        if (producer?.kind === 'sumpool') break; // written with its sumpool
        requantize(w, op, op.input, w.tflIndex(op.input), 1);
        break;
      }
      case 'sumpool': {
        const [, h, wd] = model.tensors[op.input].shape;
        const next = consumers(op.output);
        const global = op.kernel[0] === h && op.kernel[1] === wd && op.padding[0] === 0 && op.padding[1] === 0;
        if (!global || next.length !== 1 || next[0].kind !== 'quantize') fail(op.name, 'only a global average pool followed by its quantization has a TFLite int8 form (MEAN)');
        requantize(w, next[0], op.input, w.tflIndex(op.input), h * wd);
        break;
      }
      case 'maxpool':
        maxPool(w, op);
        break;
      case 'add':
        addOp(w, op);
        break;
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
    outputs: [output],
  };
  return { def, logitScale: f32(logits.scale * 2 ** logitShift), logitShift, notes: [...w.notes] };
}
