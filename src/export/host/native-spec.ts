/**
 * The plain-data form of an integer model (ir.ts) that the native addon's `IntModel` reads
 * (native/src/int8_binding.cc): typed arrays and small objects only, weights as integer values
 * (level codes resolved), per-channel requantization tables expanded, shift tables as Int32Array,
 * clipped-ReLU ceilings folded into the activation rules and the residual clamps (clip.ts).
 */
import { residualClamp, ruleWithCeiling } from '../clip.js';
import { weightValues } from '../engine.js';
import type { ActivationQuant, AddInput, ConvOp, DType, IntegerModel, Op, PoolOp, Requant } from '../ir.js';

/** The addon's type numbers (int8_kernels.hpp IntType). */
const TYPE_CODES: Readonly<Record<DType, number>> = { int8: 0, uint8: 1, int16: 2, int32: 3 };

export interface NativeRule {
  readonly relu: boolean;
  readonly zeroPoint: number;
  /** null for the rounding rule. */
  readonly thresholds: Int32Array | null;
  readonly values: Int32Array | null;
  readonly fracBits: number;
  readonly minCode: number;
  readonly maxCode: number;
}

export interface NativeRequant {
  readonly mult: Int32Array;
  readonly shift: Int32Array;
  readonly bias: Int32Array;
}

export type NativeOp =
  | { readonly kind: 'input'; readonly output: number; readonly lut: Int16Array }
  | (NativeRequant &
      Pick<ConvOp, 'kind' | 'name' | 'input' | 'output' | 'inChannels' | 'outChannels' | 'kernel' | 'stride' | 'padding' | 'groups'> & {
      /** Integer weight values, OIHW (I: input channels per group). */
      readonly weights: Int32Array;
      readonly epilogue: 'activation' | 'residual' | 'logits';
      readonly activation: NativeRule | null;
      /** The residual output's bits and its clamp (ReLU, ceiling, saturation). */
      readonly residualBits: number;
      readonly residualLo: number;
      readonly residualHi: number;
      readonly shortcut: { readonly input: number; readonly stride: number; readonly channelOffset: number; readonly mult: number; readonly shift: number } | null;
    })
  | (NativeRequant & { readonly kind: 'quantize'; readonly name: string; readonly input: number; readonly output: number; readonly activation: NativeRule })
  | Pick<PoolOp, 'kind' | 'name' | 'input' | 'output' | 'kernel' | 'stride' | 'padding'>
  | { readonly kind: 'add'; readonly name: string; readonly a: AddInput; readonly b: AddInput; readonly output: number; readonly bits: number; readonly lo: number; readonly hi: number };

export interface NativeModelSpec {
  /** [type, channels, height, width] per tensor. */
  readonly tensors: Int32Array;
  readonly ops: readonly NativeOp[];
  readonly output: number;
}

function rule(q: ActivationQuant): NativeRule {
  const r = ruleWithCeiling(q);
  return r.kind === 'thresholds'
    ? { relu: q.relu, zeroPoint: q.zeroPoint, thresholds: r.thresholds, values: r.values, fracBits: 0, minCode: 0, maxCode: 0 }
    : { relu: q.relu, zeroPoint: q.zeroPoint, thresholds: null, values: null, fracBits: r.fracBits, minCode: r.minCode, maxCode: r.maxCode };
}

/** The tables for `channels` channels (a single-entry requantization applies to every channel). */
function requant(r: Requant, channels: number): NativeRequant {
  const entry = (c: number): number => (r.mult.length === 1 ? 0 : c);
  return {
    mult: Int32Array.from({ length: channels }, (_, c) => r.mult[entry(c)]),
    shift: Int32Array.from({ length: channels }, (_, c) => r.shift[entry(c)]),
    bias: Int32Array.from({ length: channels }, (_, c) => r.bias[entry(c)]),
  };
}

function convOp(op: ConvOp): NativeOp {
  const e = op.epilogue;
  const [residualLo, residualHi] = e.kind === 'residual' ? residualClamp(e.relu, e.ceiling, e.bits) : [0, 0];
  return {
    kind: 'conv',
    name: op.name,
    input: op.input,
    output: op.output,
    inChannels: op.inChannels,
    outChannels: op.outChannels,
    kernel: op.kernel,
    stride: op.stride,
    padding: op.padding,
    groups: op.groups,
    weights: Int32Array.from(weightValues(op)),
    ...requant(op.requant, op.outChannels),
    epilogue: e.kind,
    activation: e.kind === 'activation' ? rule(e) : null,
    residualBits: e.kind === 'residual' ? e.bits : 16,
    residualLo,
    residualHi,
    shortcut: e.kind === 'residual' && e.shortcut ? { ...e.shortcut } : null,
  };
}

function nativeOp(model: IntegerModel, op: Op): NativeOp {
  switch (op.kind) {
    case 'input':
      return { kind: 'input', output: op.output, lut: op.lut };
    case 'conv':
      return convOp(op);
    case 'quantize':
      return { kind: 'quantize', name: op.name, input: op.input, output: op.output, ...requant(op.requant, model.tensors[op.input].shape[0]), activation: rule(op) };
    case 'sumpool':
    case 'maxpool':
      return { kind: op.kind, name: op.name, input: op.input, output: op.output, kernel: op.kernel, stride: op.stride, padding: op.padding };
    case 'add': {
      const [lo, hi] = residualClamp(op.relu, op.ceiling, op.bits);
      return { kind: 'add', name: op.name, a: op.a, b: op.b, output: op.output, bits: op.bits, lo, hi };
    }
  }
}

/** The spec of a validated model. */
export function nativeModelSpec(model: IntegerModel): NativeModelSpec {
  const tensors = new Int32Array(model.tensors.length * 4);
  model.tensors.forEach((t, i) => tensors.set([TYPE_CODES[t.dtype], ...t.shape], i * 4));
  return { tensors, ops: model.ops.map((op) => nativeOp(model, op)), output: model.output };
}

