/**
 * What an integer model costs, per layer and in total: parameters, stored bytes (as the tqm file
 * stores them), MACs, bit-operations, the engine's operation counts per inference (the multiply
 * path: one multiply-add per MAC; the shift-add path: one add per power-of-two term of each
 * nonzero weight plus one add and at most one shift per power group, see engine.ts), and the
 * activation memory live while each op runs. Browser-safe.
 *
 * Peak activation memory counts the tensors of the op list (each from the op that writes it to
 * the last op that reads it, the uint8 image during the input op) with one buffer per tensor;
 * scratch buffers of a particular implementation (the engine's padded input copies) and any
 * in-place reuse a code generator may plan are not counted.
 */
import { packedBytes } from './bitpack.js';
import { shiftAddGroups, weightValues } from './engine.js';
import { opInputs } from './validate.js';
import { type ActivationQuant, type CodeRule, DTYPE_INFO, type IntegerModel, type Op, type Requant, tensorSize } from './ir.js';

export interface LayerReport {
  readonly name: string;
  readonly kind: 'conv' | 'linear';
  readonly weightBits: number;
  /** Bits of the codes the layer reads (8 for the image). */
  readonly inputBits: number;
  readonly inputShape: readonly number[];
  readonly outputShape: readonly number[];
  readonly params: number;
  /** Packed weight codes only. */
  readonly weightBytes: number;
  /** Packed weights, level table, requantization and code tables of the layer and its input quantization. */
  readonly storedBytes: number;
  readonly macs: number;
  /** MACs x weight bits x input bits. */
  readonly bops: number;
  /** Multiply path: multiplies (= MACs, dense). */
  readonly multiplies: number;
  /** Shift-add path: shifts and adds (no multiplies). */
  readonly shifts: number;
  readonly adds: number;
  /** Bytes of all tensors live while this layer's op runs. */
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

function quantBytes(q: ActivationQuant): number {
  return 5 + ruleBytes(q.rule);
}

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

function opCounts(op: Extract<Op, { kind: 'conv' }>, pixels: number): { multiplies: number; shifts: number; adds: number } {
  const g = shiftAddGroups(weightValues(op), op.outChannels);
  const groups = g.shift.length;
  const shifted = g.shift.filter((p) => p > 0).length;
  return { multiplies: op.weights.codes.length * pixels, shifts: shifted * pixels, adds: (g.index.length + groups) * pixels };
}

export function modelReport(model: IntegerModel): ModelReport {
  const bits = codeBits(model);
  const live = liveBytes(model);
  const layers: LayerReport[] = [];
  let requantizations = 0;
  // Bytes of quantize ops are charged to the layer that reads their output.
  const quantizeBytes = new Map<number, number>();
  model.ops.forEach((op, i) => {
    if (op.kind === 'quantize') {
      quantizeBytes.set(op.output, requantBytes(op.requant) + quantBytes(op));
      requantizations += tensorSize(model.tensors[op.input]);
    }
    if (op.kind !== 'conv') return;
    const input = model.tensors[op.input];
    const output = model.tensors[op.output];
    const pixels = output.shape[1] * output.shape[2];
    const params = op.weights.codes.length;
    const weightBytes = packedBytes(params, op.weights.bits);
    const e = op.epilogue;
    const epilogueBytes = e.kind === 'activation' ? quantBytes(e) : e.kind === 'residual' ? 3 + (e.shortcut ? 17 : 0) : 1;
    const macs = params * pixels;
    requantizations += tensorSize(output) * (e.kind === 'residual' && e.shortcut ? 2 : 1);
    layers.push({
      name: op.name,
      kind: input.shape[1] === 1 && input.shape[2] === 1 && op.kernel[0] === 1 && op.kernel[1] === 1 ? 'linear' : 'conv',
      weightBits: op.weights.bits,
      inputBits: bits[op.input],
      inputShape: input.shape,
      outputShape: output.shape,
      params,
      weightBytes,
      storedBytes: weightBytes + 2 * op.weights.levels.length + requantBytes(op.requant) + epilogueBytes + (quantizeBytes.get(op.input) ?? 0),
      macs,
      bops: macs * op.weights.bits * bits[op.input],
      ...opCounts(op, pixels),
      activationBytes: live[i],
    });
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
