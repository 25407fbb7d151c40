/**
 * What an integer model costs, per op (one row for every op: the input lookup, convs, quantize,
 * pools, adds) and in total: parameters, stored bytes (as the tqm file stores them), MACs (groups
 * and non-square kernels counted: O x C/G x KH x KW per output pixel), bit-operations, the
 * engine's operation counts per inference (the multiply path: one multiply-add per MAC; the
 * shift-add path: one add per power-of-two term of each nonzero weight plus one add and at most
 * one shift per power group, see engine.ts), and the activation memory live while each op runs.
 * Browser-safe.
 *
 * Peak activation memory counts the tensors of the op list (each from the op that writes it to
 * the last op that reads it, the uint8 image during the input op) with one buffer per tensor;
 * scratch buffers of a particular implementation (the engine's padded input copies) and any
 * in-place reuse a code generator may plan are not counted.
 */
import { packedBytes } from './bitpack.js';
import { shiftAddGroups, weightValues } from './engine.js';
import { opInputs } from './validate.js';
import { type ActivationQuant, type CodeRule, DTYPE_INFO, type IntegerModel, type Op, type Requant, type TensorInfo, tensorSize } from './ir.js';

/** What a row of the report is: conv layers by their shape (a linear layer's kernel covers its whole input), then the other op kinds. */
export type LayerKind = 'input' | 'conv' | 'grouped' | 'depthwise' | 'linear' | 'quantize' | 'sumpool' | 'maxpool' | 'add';

/** One op of the model (every op has a row; only convs have weights, MACs and BOPs). */
export interface LayerReport {
  readonly name: string;
  readonly kind: LayerKind;
  /** Bits of the weight codes; null for ops without weights. */
  readonly weightBits: number | null;
  /** Bits of the codes the op reads (8 for the image; the first operand's for an add). */
  readonly inputBits: number;
  readonly inputShape: readonly number[];
  readonly outputShape: readonly number[];
  readonly params: number;
  /** Packed weight codes only. */
  readonly weightBytes: number;
  /** The op's tables as the tqm file stores them: packed weights, level table, requantization, code tables, lookup table, window. */
  readonly storedBytes: number;
  /** Multiply-accumulates: output pixels x output channels x (C/G) x KH x KW for a conv, 0 for the other ops. */
  readonly macs: number;
  /** MACs x weight bits x input bits. */
  readonly bops: number;
  /** Multiply path: multiplies (= MACs, dense). */
  readonly multiplies: number;
  /** Shift-add path of a conv: shifts and adds (no multiplies); a sumpool's adds (one per window position inside the input); an add's adds. */
  readonly shifts: number;
  readonly adds: number;
  /** Bytes of all tensors live while this op runs. */
  readonly activationBytes: number;
}

export interface ModelReport {
  readonly model: IntegerModel['meta'];
  readonly layers: LayerReport[];
  readonly totals: {
    readonly params: number;
    readonly weightBytes: number;
    readonly storedBytes: number;
    readonly macs: number;
    readonly bops: number;
    readonly multiplies: number;
    readonly shifts: number;
    readonly adds: number;
    /** Largest activation memory over all ops. */
    readonly peakActivationBytes: number;
    /** Requantizations (rounding multiply-shifts) per inference. */
    readonly requantizations: number;
  };
}

function ruleBytes(rule: CodeRule): number {
  return rule.kind === 'thresholds' ? 4 * (rule.thresholds.length + rule.values.length) : 9;
}

function requantBytes(r: Requant): number {
  return 9 * r.mult.length;
}

function ceilingBytes(ceiling: number | null): number {
  return ceiling === null ? 1 : 5;
}

function quantBytes(q: ActivationQuant): number {
  return 5 + ceilingBytes(q.ceiling) + ruleBytes(q.rule);
}

/** kernel, stride and padding: six u32. */
const WINDOW_BYTES = 24;

function codeCount(rule: CodeRule): number {
  return rule.kind === 'thresholds' ? rule.values.length : rule.maxCode - rule.minCode + 1;
}

/** Bits of the codes each tensor holds: from the rule of the op writing it (8 for the image). */
function codeBits(model: IntegerModel): number[] {
  const bits = model.tensors.map((t) => Math.log2(DTYPE_INFO[t.dtype].max - DTYPE_INFO[t.dtype].min + 1));
  for (const op of model.ops) {
    const rule = op.kind === 'quantize' ? op.rule : op.kind === 'conv' && op.epilogue.kind === 'activation' ? op.epilogue.rule : null;
    if (rule) bits[op.output] = Math.ceil(Math.log2(codeCount(rule)));
  }
  return bits;
}

/** Bytes live during each op. */
function liveBytes(model: IntegerModel): number[] {
  const lastUse = model.tensors.map(() => -1);
  const firstUse = model.tensors.map(() => Infinity);
  model.ops.forEach((op, i) => {
    firstUse[op.output] = Math.min(firstUse[op.output], i);
    lastUse[op.output] = Math.max(lastUse[op.output], i);
    for (const t of opInputs(op)) lastUse[t] = Math.max(lastUse[t], i);
  });
  lastUse[model.output] = model.ops.length - 1;
  const bytes = model.tensors.map((t) => tensorSize(t) * DTYPE_INFO[t.dtype].bytes);
  const image = model.ops[0].kind === 'input' ? tensorSize(model.tensors[model.ops[0].output]) : 0;
  return model.ops.map((_, i) => bytes.reduce((sum, b, t) => (firstUse[t] <= i && i <= lastUse[t] ? sum + b : sum), i === 0 ? image : 0));
}

type ConvOp = Extract<Op, { kind: 'conv' }>;

function opCounts(op: ConvOp, pixels: number): { multiplies: number; shifts: number; adds: number } {
  const g = shiftAddGroups(weightValues(op), op.outChannels);
  const groups = g.shift.length;
  const shifted = g.shift.filter((p) => p > 0).length;
  return { multiplies: op.weights.codes.length * pixels, shifts: shifted * pixels, adds: (g.index.length + groups) * pixels };
}

function convKind(op: ConvOp, input: TensorInfo): LayerKind {
  const [, h, w] = input.shape;
  if (op.kernel[0] === h && op.kernel[1] === w && op.padding[0] === 0 && op.padding[1] === 0) return 'linear';
  if (op.groups === 1) return 'conv';
  return op.groups === op.inChannels ? 'depthwise' : 'grouped';
}

function epilogueBytes(op: ConvOp): number {
  const e = op.epilogue;
  if (e.kind === 'activation') return quantBytes(e);
  if (e.kind === 'residual') return 3 + ceilingBytes(e.ceiling) + (e.shortcut ? 17 : 0);
  return 1;
}

/** Window positions inside an input of `size` along one axis, summed over the outputs. */
function insidePositions(size: number, outputs: number, kernel: number, stride: number, padding: number): number {
  let total = 0;
  for (let o = 0; o < outputs; o++) total += Math.min(o * stride - padding + kernel, size) - Math.max(o * stride - padding, 0);
  return total;
}

/** The columns of an op's row that depend on its kind (the rest is common to all ops). */
type Costs = Pick<LayerReport, 'kind' | 'weightBits' | 'params' | 'weightBytes' | 'storedBytes' | 'macs' | 'bops' | 'multiplies' | 'shifts' | 'adds'> & { readonly requantizations: number };

const NO_WORK = { weightBits: null, params: 0, weightBytes: 0, macs: 0, bops: 0, multiplies: 0, shifts: 0, adds: 0, requantizations: 0 } as const;

function opCosts(model: IntegerModel, op: Op, bits: readonly number[]): Costs {
  const output = model.tensors[op.output];
  switch (op.kind) {
    case 'input':
      return { ...NO_WORK, kind: 'input', storedBytes: 2 * op.lut.length };
    case 'conv': {
      const input = model.tensors[op.input];
      const pixels = output.shape[1] * output.shape[2];
      const params = op.weights.codes.length;
      const weightBytes = packedBytes(params, op.weights.bits);
      const macs = params * pixels;
      const e = op.epilogue;
      return {
        kind: convKind(op, input),
        weightBits: op.weights.bits,
        params,
        weightBytes,
        storedBytes: weightBytes + 2 * op.weights.levels.length + requantBytes(op.requant) + epilogueBytes(op),
        macs,
        bops: macs * op.weights.bits * bits[op.input],
        ...opCounts(op, pixels),
        requantizations: tensorSize(output) * (e.kind === 'residual' && e.shortcut ? 2 : 1),
      };
    }
    case 'quantize':
      return { ...NO_WORK, kind: 'quantize', storedBytes: requantBytes(op.requant) + quantBytes(op), requantizations: tensorSize(output) };
    case 'sumpool':
    case 'maxpool': {
      const [c, h, w] = model.tensors[op.input].shape;
      const positions = c * insidePositions(h, output.shape[1], op.kernel[0], op.stride[0], op.padding[0]) * insidePositions(w, output.shape[2], op.kernel[1], op.stride[1], op.padding[1]);
      return { ...NO_WORK, kind: op.kind, storedBytes: WINDOW_BYTES, adds: op.kind === 'sumpool' ? positions : 0 };
    }
    case 'add':
      return { ...NO_WORK, kind: 'add', storedBytes: 2 * 9 + 2 + ceilingBytes(op.ceiling), adds: tensorSize(output), requantizations: 2 * tensorSize(output) };
  }
}

export function modelReport(model: IntegerModel): ModelReport {
  const bits = codeBits(model);
  const live = liveBytes(model);
  let requantizations = 0;
  const layers = model.ops.map((op, i): LayerReport => {
    const { requantizations: count, ...costs } = opCosts(model, op, bits);
    requantizations += count;
    const read = opInputs(op)[0];
    return {
      name: op.kind === 'input' ? 'input' : op.name,
      inputBits: read === undefined ? 8 : bits[read],
      inputShape: read === undefined ? model.tensors[op.output].shape : model.tensors[read].shape,
      outputShape: model.tensors[op.output].shape,
      ...costs,
      activationBytes: live[i],
    };
  });
  const sum = (k: keyof LayerReport): number => layers.reduce((a, l) => a + (l[k] as number), 0);
  return {
    model: model.meta,
    layers,
    totals: {
      params: sum('params'),
      weightBytes: sum('weightBytes'),
      storedBytes: sum('storedBytes'),
      macs: sum('macs'),
      bops: sum('bops'),
      multiplies: sum('multiplies'),
      shifts: sum('shifts'),
      adds: sum('adds'),
      peakActivationBytes: Math.max(...live),
      requantizations,
    },
  };
}
