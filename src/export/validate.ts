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
  type AddInput,
  type AddOp,
  type ConvOp,
  DTYPES,
  DTYPE_INFO,
  type IntegerModel,
  IR_VERSION,
  type Op,
  type Pair,
  type PoolOp,
  type QuantizeOp,
  type Requant,
  type TensorInfo,
  convOutSize,
  tensorSize,
} from './ir.js';

/** Requantized values stay below this magnitude, so a shortcut term or a rounding offset can be added. */
export const VALUE_LIMIT = 2 ** 30;

/** Elements per tensor (16M; a microcontroller model's largest is well under 1M): every engine allocates each tensor. */
export const MAX_TENSOR_ELEMENTS = 2 ** 24;

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
  if (tensorSize(t) > MAX_TENSOR_ELEMENTS) fail(where, `shape [${t.shape}] has ${tensorSize(t)} elements, more than the ${MAX_TENSOR_ELEMENTS} an integer model may hold per tensor`);
  if (!(Number.isFinite(t.scale) && t.scale >= 0)) fail(where, `scale must be a finite number >= 0, got ${t.scale}`);
  const info = DTYPE_INFO[t.dtype];
  const [lo, hi] = t.range ?? [];
  if (!isInt(lo, info.min, info.max) || !isInt(hi, lo, info.max)) {
    fail(where, `range [${lo}, ${hi}] must be integers with min <= max inside ${t.dtype} [${info.min}, ${info.max}]`);
  }
}

/** Tensors an op reads (a residual epilogue's shortcut included). */
export function opInputs(op: Op): number[] {
  switch (op.kind) {
    case 'input':
      return [];
    case 'add':
      return [op.a.input, op.b.input];
    case 'conv':
      return op.epilogue.kind === 'residual' && op.epilogue.shortcut ? [op.input, op.epilogue.shortcut.input] : [op.input];
    default:
      return [op.input];
  }
}

/** [H, W] of a window op's (conv, pool) output: convOutSize along each axis. */
export function windowOutSize(h: number, w: number, kernel: Pair, stride: Pair, padding: Pair): [number, number] {
  return [convOutSize(h, kernel[0], stride[0], padding[0]), convOutSize(w, kernel[1], stride[1], padding[1])];
}

/** `field` must be an [h, w] pair of integers in [lo, hi]. */
function checkPair(value: Pair, field: string, lo: number, hi: number, where: string): void {
  if (!Array.isArray(value) || value.length !== 2 || !value.every((v) => isInt(v, lo, hi))) {
    fail(where, `${field} must be an [h, w] pair of integers in [${lo}, ${hi}], got ${JSON.stringify(value)}`);
  }
}

/** A ceiling (null, or an integer clip of v that the relu floor does not exceed); returns it as a bound (Infinity when null). */
function checkCeiling(ceiling: number | null, floor: number | null, where: string): number {
  if (ceiling === null) return Infinity;
  if (!isInt(ceiling, -VALUE_LIMIT, VALUE_LIMIT)) fail(where, `ceiling must be null or an integer within ±2^30, got ${ceiling}`);
  if (floor !== null && ceiling < floor) fail(where, `ceiling ${ceiling} is below the relu floor ${floor}`);
  return ceiling;
}

/** Values a `residual` epilogue or an `add` can write: relu floor, ceiling, clamp to a signed `bits`-bit integer. */
function residualRange(relu: boolean, ceiling: number | null, bits: number, where: string): [number, number] {
  if (bits !== 8 && bits !== 16) fail(where, `bits must be 8 or 16, got ${bits}`);
  const top = Math.min(checkCeiling(ceiling, relu ? 0 : null, where), 2 ** (bits - 1) - 1);
  const bottom = relu ? 0 : -(2 ** (bits - 1));
  return [Math.min(bottom, top), top];
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
  checkCeiling(q.ceiling, q.relu ? q.zeroPoint : null, where);
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
    if (!isInt(rule.fracBits, 0, 30)) fail(where, `fracBits must be an integer in [0, 30], got ${rule.fracBits}`);
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
  const perOut = (op.inChannels / op.groups) * op.kernel[0] * op.kernel[1];
  if (!(w.codes instanceof Uint8Array) || w.codes.length !== op.outChannels * perOut) {
    fail(where, `weights.codes: expected ${op.outChannels * perOut} codes (O * C/G * KH * KW = ${op.outChannels} * ${op.inChannels / op.groups} * ${op.kernel[0]} * ${op.kernel[1]}), got ${w.codes?.length}`);
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
  for (const k of ['inChannels', 'outChannels', 'groups'] as const) {
    if (!isInt(op[k], 1, 1 << 16)) fail(where, `${k} must be an integer in [1, 65536], got ${op[k]}`);
  }
  if (op.inChannels % op.groups !== 0 || op.outChannels % op.groups !== 0) {
    fail(where, `groups ${op.groups} must divide inChannels ${op.inChannels} and outChannels ${op.outChannels}`);
  }
  checkWindow(op, input, output, op.outChannels, where);
  if (input.shape[0] !== op.inChannels) fail(where, `input ${input.name} has ${input.shape[0]} channels, the conv expects ${op.inChannels}`);
  // The engine holds conv inputs in int16 (and so does every integer kernel the exporters write).
  if (input.range[0] < DTYPE_INFO.int16.min || input.range[1] > DTYPE_INFO.int16.max) {
    fail(where, `input ${input.name} has range [${input.range}]; a conv input must fit int16`);
  }
  const accBound = checkWeights(op, where) * maxAbs(input);
  if (accBound > INT32_MAX) fail(where, `the int32 accumulator can reach ${accBound}`);
  const vBound = checkRequant(op.requant, op.outChannels, accBound, where);
  if (op.requant.mult.length !== op.outChannels) fail(where, `requant needs one entry per output channel (${op.outChannels})`);
  const e = op.epilogue;
  if (e.kind === 'activation') {
    const [lo, hi] = activationRange(e, where);
    checkCovers(output, lo, hi, where);
  } else if (e.kind === 'residual') {
    const [lo, hi] = residualRange(e.relu, e.ceiling, e.bits, `${where} residual`);
    if (e.shortcut) checkShortcut(op, tensors, written, where);
    checkCovers(output, lo, hi, where);
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

/**
 * kernel, stride and padding of a conv or pool, and its output shape [channels, convOutSize per
 * axis]. Pools keep padding within half the kernel (PyTorch's rule), so every window overlaps the input.
 */
function checkWindow(op: ConvOp | PoolOp, input: TensorInfo, output: TensorInfo, channels: number, where: string): void {
  checkPair(op.kernel, 'kernel', 1, 1 << 16, where);
  checkPair(op.stride, 'stride', 1, 1 << 16, where);
  checkPair(op.padding, 'padding', 0, 1 << 16, where);
  if (op.kind !== 'conv' && op.padding.some((p, i) => 2 * p > op.kernel[i])) {
    fail(where, `padding [${op.padding}] must be at most half the kernel [${op.kernel}]`);
  }
  const [, h, w] = input.shape;
  if (op.kernel[0] > h + 2 * op.padding[0] || op.kernel[1] > w + 2 * op.padding[1]) {
    fail(where, `kernel [${op.kernel}] is larger than the padded input ${input.name} [${input.shape}]`);
  }
  const expected = [channels, ...windowOutSize(h, w, op.kernel, op.stride, op.padding)];
  if (expected.some((d, i) => d !== output.shape[i])) fail(where, `output ${output.name} has shape [${output.shape}], expected [${expected}]`);
}

/** Sum of each window (int32; padding adds zeros) or its max (the input's values). */
function checkPool(op: PoolOp, tensors: readonly TensorInfo[], where: string): void {
  const input = tensors[op.input];
  const output = tensors[op.output];
  checkWindow(op, input, output, input.shape[0], where);
  if (op.kind === 'maxpool') {
    if (output.dtype !== input.dtype) fail(where, `output ${output.name} is ${output.dtype}; a maxpool keeps the input's dtype ${input.dtype}`);
    checkCovers(output, input.range[0], input.range[1], where);
    return;
  }
  const n = op.kernel[0] * op.kernel[1];
  const padded = op.padding[0] > 0 || op.padding[1] > 0;
  const [lo, hi] = padded ? [Math.min(input.range[0], 0), Math.max(input.range[1], 0)] : input.range;
  checkCovers(output, n * lo, n * hi, where);
}

/** Bound of rms(x, mult, shift) over an add input's range. */
function checkAddInput(x: AddInput, field: 'a' | 'b', tensors: readonly TensorInfo[], written: Set<number>, where: string): number {
  if (!isInt(x.input, 0, tensors.length - 1) || !written.has(x.input)) fail(where, `${field}.input ${x.input} is not a tensor written by an earlier op`);
  if (!isInt(x.mult, -INT32_MAX, INT32_MAX) || !isInt(x.shift, 0, 62)) fail(where, `${field} multiplier ${x.mult} >> ${x.shift} is invalid (int32 mult, shift 0..62)`);
  return Math.abs(fixedValue(x)) * maxAbs(tensors[x.input]) + 1;
}

function checkAdd(op: AddOp, tensors: readonly TensorInfo[], written: Set<number>, where: string): void {
  const bound = checkAddInput(op.a, 'a', tensors, written, where) + checkAddInput(op.b, 'b', tensors, written, where);
  if (!(bound < VALUE_LIMIT)) fail(where, `the sum of the rescaled inputs can reach ${bound.toExponential(3)}, beyond ±2^30`);
  const [a, b, output] = [tensors[op.a.input], tensors[op.b.input], tensors[op.output]];
  for (const t of [b, output]) {
    if (t.shape.some((d, i) => d !== a.shape[i])) fail(where, `${t.name} has shape [${t.shape}], a (${a.name}) has [${a.shape}]: an add needs equal shapes`);
  }
  const [lo, hi] = residualRange(op.relu, op.ceiling, op.bits, where);
  checkCovers(output, lo, hi, where);
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
  if (op.kind !== 'input' && op.kind !== 'add' && (!isInt(op.input, 0, tensors.length - 1) || !written.has(op.input))) {
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
    case 'sumpool':
    case 'maxpool':
      checkPool(op, tensors, where);
      break;
    case 'add':
      checkAdd(op, tensors, written, where);
      break;
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
  checkMeta(model);
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

function isNumberList(v: unknown, length: number, lo: number): v is number[] {
  return Array.isArray(v) && v.length === length && v.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= lo);
}

/** The meta fields the exporters and reports read: each of the right type (a tqm file's meta is JSON from the file). */
function checkMeta(model: IntegerModel): void {
  const m = model.meta as unknown as Record<string, unknown> | null;
  const where = 'integer model meta';
  if (typeof m !== 'object' || m === null) fail(where, 'is missing');
  for (const field of ['model', 'method', 'firstLast'] as const) {
    if (typeof m[field] !== 'string') fail(where, `${field} must be a string, got ${JSON.stringify(m[field])}`);
  }
  for (const field of ['wbits', 'abits', 'residualBits'] as const) {
    if (!isInt(m[field], 1, 32)) fail(where, `${field} must be an integer bit count, got ${JSON.stringify(m[field])}`);
  }
  const classes = tensorSize(model.tensors[model.output]);
  if (!isStringList(m.classes) || m.classes.length !== classes) fail(where, `classes must name each of the ${classes} outputs`);
  if (!isStringList(m.notes)) fail(where, 'notes must be a list of strings');
  const channels = model.tensors[model.ops[0].output].shape[0];
  const norm = m.normalization as { mean?: unknown; std?: unknown } | null;
  if (typeof norm !== 'object' || norm === null || !isNumberList(norm.mean, channels, -Infinity) || !isNumberList(norm.std, channels, Number.MIN_VALUE)) {
    fail(where, `normalization must have one finite mean and one positive std per input channel (${channels})`);
  }
}
