/**
 * Structural and numeric validation of an integer model (ir.ts): shapes agree op to op, tables
 * have the right lengths, every tensor is written before it is read, and no accumulator or
 * requantized value can overflow int32 for any input (worst case from the declared tensor ranges).
 * The engine and the tqm reader run it, so a bad field is a clear error instead of wrong results.
 * Browser-safe.
 */
import { INT32_MAX, fixedValue } from './int-ops.js';
import {
  type ActivationQuant,
  type ConvOp,
  DTYPES,
  DTYPE_INFO,
  type IntegerModel,
  IR_VERSION,
  type Op,
  type QuantizeOp,
  type Requant,
  type TensorInfo,
  convOutSize,
  tensorSize,
} from './ir.js';

/** Requantized values stay below this magnitude, so a shortcut term or a rounding offset can be added. */
export const VALUE_LIMIT = 2 ** 30;

export class IntegerModelError extends Error {
  override name = 'IntegerModelError';
}

function fail(where: string, message: string): never {
  throw new IntegerModelError(`${where}: ${message}`);
}

function isInt(v: unknown, lo = -Infinity, hi = Infinity): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
}

function maxAbs(t: TensorInfo): number {
  return Math.max(Math.abs(t.range[0]), Math.abs(t.range[1]));
}

function checkTensor(t: TensorInfo, id: number): void {
  const where = `tensor ${id} (${t.name})`;
  if (typeof t.name !== 'string') fail(`tensor ${id}`, 'name must be a string');
  if (!DTYPES.includes(t.dtype)) fail(where, `dtype "${t.dtype}" is not one of ${DTYPES.join(', ')}`);
  if (!Array.isArray(t.shape) || t.shape.length !== 3 || !t.shape.every((d) => isInt(d, 1, 1 << 20))) {
    fail(where, `shape must be [C, H, W] of positive integers, got ${JSON.stringify(t.shape)}`);
  }
  if (!(Number.isFinite(t.scale) && t.scale >= 0)) fail(where, `scale must be a finite number >= 0, got ${t.scale}`);
  const info = DTYPE_INFO[t.dtype];
  const [lo, hi] = t.range ?? [];
  if (!isInt(lo, info.min, info.max) || !isInt(hi, lo, info.max)) {
    fail(where, `range [${lo}, ${hi}] must be integers with min <= max inside ${t.dtype} [${info.min}, ${info.max}]`);
  }
}

/** The declared range of `t` must cover [lo, hi]. */
function checkCovers(t: TensorInfo, lo: number, hi: number, where: string): void {
  if (lo < t.range[0] || hi > t.range[1]) fail(where, `output ${t.name} holds values in [${lo}, ${hi}] but declares range [${t.range[0]}, ${t.range[1]}]`);
}

function checkRequant(r: Requant, channels: number, inputBound: number, where: string): number {
  if (!(r.mult instanceof Int32Array) || !(r.shift instanceof Uint8Array) || !(r.bias instanceof Int32Array)) {
    fail(where, 'requant needs mult (Int32Array), shift (Uint8Array) and bias (Int32Array)');
  }
  if (![1, channels].includes(r.mult.length) || r.shift.length !== r.mult.length || r.bias.length !== r.mult.length) {
    fail(where, `requant arrays must have ${channels} (or 1) entries, got ${r.mult.length}/${r.shift.length}/${r.bias.length}`);
  }
  let bound = 0;
  for (let c = 0; c < r.mult.length; c++) {
    if (r.shift[c] > 62) fail(where, `requant shift[${c}] = ${r.shift[c]} is above 62`);
    const v = Math.abs(fixedValue({ mult: r.mult[c], shift: r.shift[c] })) * inputBound + 1 + Math.abs(r.bias[c]);
    if (!(v < VALUE_LIMIT)) fail(where, `channel ${c}: requantized values can reach ${v.toExponential(3)}, beyond ±2^30`);
    bound = Math.max(bound, v);
  }
  return Math.ceil(bound);
}

/** Values an activation quantization can write, checked against the rule's tables. */
function activationRange(q: ActivationQuant, where: string): [number, number] {
  if (!isInt(q.zeroPoint, -VALUE_LIMIT, VALUE_LIMIT)) fail(where, `zeroPoint must be an integer, got ${q.zeroPoint}`);
  const rule = q.rule;
  if (rule.kind === 'thresholds') {
    const { thresholds: t, values } = rule;
    if (!(t instanceof Int32Array) || !(values instanceof Int32Array) || values.length !== t.length + 1) {
      fail(where, `thresholds rule needs ${'N'} ascending thresholds and N + 1 values, got ${t?.length} and ${values?.length}`);
    }
    for (let k = 1; k < t.length; k++) if (!(t[k] > t[k - 1])) fail(where, `thresholds must be strictly ascending (index ${k})`);
    return [Math.min(...values), Math.max(...values)];
  }
  if (rule.kind === 'round') {
    if (!isInt(rule.fracBits, 0, 16)) fail(where, `fracBits must be an integer in [0, 16], got ${rule.fracBits}`);
    if (!isInt(rule.minCode, -VALUE_LIMIT, VALUE_LIMIT) || !isInt(rule.maxCode, rule.minCode, VALUE_LIMIT)) {
      fail(where, `round rule needs integer minCode <= maxCode, got ${rule.minCode}, ${rule.maxCode}`);
    }
    return [rule.minCode, rule.maxCode];
  }
  return fail(where, `unknown code rule "${(rule as { kind: string }).kind}"`);
}

function checkWeights(op: ConvOp, where: string): number {
  const w = op.weights;
  if (!isInt(w.bits, 1, 8)) fail(where, `weight bits must be 1..8, got ${w.bits}`);
  if (!['apot', 'uniform', 'int8'].includes(w.scheme)) fail(where, `unknown weight scheme "${w.scheme}"`);
  if (!(w.levels instanceof Int32Array) || w.levels.length < 1 || w.levels.length > 2 ** w.bits) {
    fail(where, `weights need 1..${2 ** w.bits} levels for ${w.bits} bits, got ${w.levels?.length}`);
  }
  for (const v of w.levels) if (!isInt(v, -32767, 32767)) fail(where, `weight level ${v} is outside int16`);
  const perOut = op.inChannels * op.kernel * op.kernel;
  if (!(w.codes instanceof Uint8Array) || w.codes.length !== op.outChannels * perOut) {
    fail(where, `expected ${op.outChannels * perOut} weight codes, got ${w.codes?.length}`);
  }
  let worst = 0;
  for (let o = 0; o < op.outChannels; o++) {
    let sum = 0;
    for (let i = o * perOut; i < (o + 1) * perOut; i++) {
      const code = w.codes[i];
      if (code >= w.levels.length) fail(where, `weight ${i} has code ${code}, but there are ${w.levels.length} levels`);
      sum += Math.abs(w.levels[code]);
    }
    worst = Math.max(worst, sum);
  }
  return worst;
}

function checkConv(op: ConvOp, tensors: readonly TensorInfo[], written: Set<number>, where: string): void {
  const input = tensors[op.input];
  const output = tensors[op.output];
  for (const [k, lo] of [['inChannels', 1], ['outChannels', 1], ['kernel', 1], ['stride', 1], ['padding', 0]] as const) {
    if (!isInt(op[k], lo, 1 << 16)) fail(where, `${k} must be an integer >= ${lo}, got ${op[k]}`);
  }
  const [c, h, w] = input.shape;
  if (c !== op.inChannels) fail(where, `input ${input.name} has ${c} channels, the conv expects ${op.inChannels}`);
  const expected = [op.outChannels, convOutSize(h, op.kernel, op.stride, op.padding), convOutSize(w, op.kernel, op.stride, op.padding)];
  if (expected.some((d, i) => d !== output.shape[i])) fail(where, `output ${output.name} has shape [${output.shape}], expected [${expected}]`);
  const accBound = checkWeights(op, where) * maxAbs(input);
  if (accBound > INT32_MAX) fail(where, `the int32 accumulator can reach ${accBound}`);
  const vBound = checkRequant(op.requant, op.outChannels, accBound, where);
  if (op.requant.mult.length !== op.outChannels) fail(where, `requant needs one entry per output channel (${op.outChannels})`);
  const e = op.epilogue;
  if (e.kind === 'activation') {
    const [lo, hi] = activationRange(e, where);
    checkCovers(output, lo, hi, where);
  } else if (e.kind === 'residual') {
    if (e.bits !== 8 && e.bits !== 16) fail(where, `residual bits must be 8 or 16, got ${e.bits}`);
    if (e.shortcut) checkShortcut(op, tensors, written, where);
    checkCovers(output, e.relu ? 0 : -(2 ** (e.bits - 1)), 2 ** (e.bits - 1) - 1, where);
  } else if (e.kind === 'logits') {
    checkCovers(output, -vBound, vBound, where);
  } else {
    fail(where, `unknown epilogue "${(e as { kind: string }).kind}"`);
  }
}

function checkShortcut(op: ConvOp, tensors: readonly TensorInfo[], written: Set<number>, where: string): void {
  const s = op.epilogue.kind === 'residual' ? op.epilogue.shortcut! : fail(where, 'not a residual epilogue');
  if (!isInt(s.input, 0, tensors.length - 1) || !written.has(s.input)) fail(where, `shortcut input ${s.input} is not a tensor written before this op`);
  if (!isInt(s.stride, 1, 64) || !isInt(s.channelOffset, 0, op.outChannels)) fail(where, `shortcut stride ${s.stride} / channelOffset ${s.channelOffset} out of range`);
  const src = tensors[s.input];
  const out = tensors[op.output];
  if (src.shape[0] + s.channelOffset > op.outChannels) fail(where, `shortcut ${src.name} has ${src.shape[0]} channels; with offset ${s.channelOffset} they exceed ${op.outChannels}`);
  if (Math.ceil(src.shape[1] / s.stride) !== out.shape[1] || Math.ceil(src.shape[2] / s.stride) !== out.shape[2]) {
    fail(where, `shortcut ${src.name} [${src.shape}] subsampled by ${s.stride} does not match the output [${out.shape}]`);
  }
  if (!isInt(s.mult, -INT32_MAX, INT32_MAX) || !isInt(s.shift, 0, 62)) fail(where, `shortcut multiplier ${s.mult} >> ${s.shift} is invalid`);
  if (!(Math.abs(fixedValue(s)) * maxAbs(src) + 1 < VALUE_LIMIT)) fail(where, 'shortcut values can exceed ±2^30');
}

function checkQuantize(op: QuantizeOp, tensors: readonly TensorInfo[], where: string): void {
  const input = tensors[op.input];
  const output = tensors[op.output];
  if (input.shape.some((d, i) => d !== output.shape[i])) fail(where, `output shape [${output.shape}] differs from input [${input.shape}]`);
  checkRequant(op.requant, input.shape[0], maxAbs(input), where);
  const [lo, hi] = activationRange(op, where);
  checkCovers(output, lo, hi, where);
}

function checkOp(op: Op, index: number, model: IntegerModel, written: Set<number>): void {
  const where = `op ${index} (${op.kind}${'name' in op ? ` ${op.name}` : ''})`;
  const { tensors } = model;
  if (!isInt(op.output, 0, tensors.length - 1)) fail(where, `output ${op.output} is not a tensor id`);
  if (written.has(op.output)) fail(where, `tensor ${op.output} is written twice`);
  if (op.kind !== 'input' && (!isInt(op.input, 0, tensors.length - 1) || !written.has(op.input))) {
    fail(where, `input ${op.input} is not a tensor written by an earlier op`);
  }
  const output = tensors[op.output];
  switch (op.kind) {
    case 'input': {
      if (index !== 0) fail(where, 'the input op must come first');
      if (!(op.lut instanceof Int16Array) || op.lut.length !== output.shape[0] * 256) fail(where, `lut needs ${output.shape[0] * 256} entries`);
      checkCovers(output, Math.min(...op.lut), Math.max(...op.lut), where);
      break;
    }
    case 'conv':
      checkConv(op, tensors, written, where);
      break;
    case 'quantize':
      checkQuantize(op, tensors, where);
      break;
    case 'sumpool': {
      const input = tensors[op.input];
      if (output.shape[0] !== input.shape[0] || output.shape[1] !== 1 || output.shape[2] !== 1) fail(where, `output must be [${input.shape[0]}, 1, 1]`);
      const n = input.shape[1] * input.shape[2];
      checkCovers(output, n * input.range[0], n * input.range[1], where);
      break;
    }
    default:
      fail(where, `unknown op kind "${(op as { kind: string }).kind}"`);
  }
  written.add(op.output);
}

/** Throws an IntegerModelError naming the op, tensor or field that is wrong. */
export function validateIntegerModel(model: IntegerModel): void {
  if (model.version !== IR_VERSION) fail('integer model', `IR version ${model.version} is not supported (expects ${IR_VERSION})`);
  if (!Array.isArray(model.tensors) || !Array.isArray(model.ops) || model.ops.length === 0) fail('integer model', 'needs tensors and ops');
  model.tensors.forEach(checkTensor);
  const written = new Set<number>();
  model.ops.forEach((op, i) => checkOp(op, i, model, written));
  if (!written.has(model.output) || model.tensors[model.output].dtype !== 'int32') fail('integer model', `output ${model.output} must be an int32 tensor written by an op`);
  const m = model.meta;
  if (!m || !Array.isArray(m.classes) || m.classes.length !== tensorSize(model.tensors[model.output])) {
    fail('integer model meta', `classes must name each of the ${tensorSize(model.tensors[model.output])} outputs`);
  }
  if (m.normalization?.mean?.length !== model.tensors[model.ops[0].output].shape[0]) fail('integer model meta', 'normalization must have one mean per input channel');
}
