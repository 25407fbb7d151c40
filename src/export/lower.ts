/**
 * Lowering pass: the traced graph (src/graph) of a trained fake-quantized model to the integer
 * model of ir.ts. It reads node kinds and their tensors only, never a model class, so any network
 * made of the graph's node kinds lowers the same way.
 *
 * What becomes what:
 * - A conv or linear node, with the batch norm and ReLU (or clipped ReLU) that alone read its
 *   output, is one integer conv (a linear layer: a conv whose kernel covers its input). Weights
 *   become level indices into the quantizer's integer levels, read off the fake-quant forward of
 *   the weights itself (requant.ts); batch norm, the weight and input scales and EWGS's
 *   |output_scale| fold into the requantization.
 * - Where that output goes decides its form:
 *   - read by exactly one conv or linear layer (through max pools and flattens): that layer's
 *     activation codes (its quantizer's, or 8 bits from calibration for a float-input layer),
 *     straight from the conv's epilogue;
 *   - the graph's output: int32 logits;
 *   - otherwise (read twice, by an add, a pool, ...): a fixed-point stream (int16, or int8 with
 *     `residualBits: 8`) whose scale comes from calibration: headroom * max / (2^(bits-1) - 1),
 *     headroom 2 for int16 (values up to twice the calibration maximum fit) and 1 for int8.
 * - An add of such a conv output (not passed through a ReLU) and another tensor is that conv's
 *   residual epilogue: the other input is added in the same loop (identity, the option-A zero-pad
 *   shortcut by stride and channel offset, or a second conv computed at the join's scale first);
 *   an add of two other tensors is an `add` op. Streams joined by identity adds share one scale,
 *   so those adds need no rescaling and are exact.
 * - A quantized layer reading a stream gets a `quantize` op (the stream's affine map, pending
 *   batch norm and ReLU folded in) to its activation codes; a layer trained with a float input
 *   (the 'float' first/last policy) gets 8-bit codes from the calibration range instead, and float
 *   weights are quantized after training to int8 per output channel: deviations from the
 *   fake-quantized model, listed in the model's notes and measured by the agreement check.
 * - Average pooling: int32 window sums, 1/(KH*KW) folded into the consumer's requantization; max
 *   pooling runs on the integers (activation codes and streams grow with the real value).
 * - The image: normalization folded into a per-channel lookup table to int8 (or int16), one scale
 *   for all channels (max |normalized pixel| / 127, or / 32767), so padding (normalized 0) stays
 *   integer 0.
 *   The layers reading it must not quantize their input (the table is the input quantization).
 * - Uniform activation rounding sends exact ties to the lower code (training: half to even); APoT
 *   ties go to the lower level in both.
 */
import { roundHalfEven } from '../backend/js/round.js';
import { type Normalization, normalizationTable } from '../data/augment.js';
import { type Graph, type GraphNode, type PoolNode, isKind, trace } from '../graph/index.js';
import type { Module } from '../nn/module.js';
import { toFixedMultiplier } from './int-ops.js';
import {
  type ConvOp,
  type Epilogue,
  type IntegerModel,
  IR_VERSION,
  type ModelMeta,
  type Op,
  type Pair,
  type Requant,
  type Shortcut,
  type TensorInfo,
} from './ir.js';
import {
  type ActivationScheme,
  type Affine,
  type Clip,
  IDENTITY,
  LOGITS_FRAC_BITS,
  LoweringError,
  type LoweredWeights,
  TARGET_LIMIT,
  accumulatorBound,
  activationQuant,
  calibratedScheme,
  calibratedWeights,
  chooseFracBits,
  foldAffine,
  foldBatchNorm,
  quantizedWeights,
  quantizerScheme,
  requantize,
  valueBound,
  maxAbs,
} from './requant.js';
import {
  type ConvGroup,
  type DeploymentPlan,
  LoweringLayout,
  NO_CLIP,
  type PlanOptions,
  type StandaloneAdd,
  type WeightedNode,
  isWeighted,
  planDeployment,
  planFloatInput,
  planStreamScale,
  tighter,
} from './plan.js';
import { validateIntegerModel, windowOutSize } from './validate.js';

export { LoweringError } from './requant.js';

export interface LowerOptions extends Partial<Omit<PlanOptions, 'normalization'>> {
  /** The normalization the model was trained with (folded into the input lookup table). */
  readonly normalization: Normalization;
  /**
   * The deployment plan to lower with (a run's final phase trained under it). Without one, the
   * plan is made here from `calibration` and the bit and headroom options.
   */
  readonly plan?: DeploymentPlan;
  readonly meta: Omit<ModelMeta, 'normalization' | 'residualBits' | 'notes'>;
  /** Lowering warnings (also kept in the model's notes). */
  readonly warn?: (message: string) => void;
}

/** A lowered value: an integer tensor whose real value is M[c] * t + B[c], with a ReLU still to apply. */
interface Lowered {
  readonly tensor: number;
  readonly affine: Affine;
  readonly clip: Clip;
  /** The layer whose activation codes the tensor holds, or null. */
  readonly codesFor: number | null;
}

function perTensor(scale: number): Affine {
  return { M: Float64Array.of(scale), B: Float64Array.of(0) };
}

/** Emits the integer model's tensors and ops, value by value, producers first. */
class Lowerer {
  readonly tensors: TensorInfo[] = [];
  readonly ops: Op[] = [];
  readonly #values = new Map<number, Lowered>();
  readonly #nodes: readonly GraphNode[];

  constructor(
    readonly layout: LoweringLayout,
    readonly plan: DeploymentPlan,
    readonly notes: string[],
    readonly warn: (message: string) => void,
    readonly image: Lowered,
  ) {
    this.#nodes = layout.graph.nodes;
    this.#values.set(0, image);
  }

  #streamScale(id: number): number {
    return planStreamScale(this.plan, this.#nodes[id]);
  }

  #addTensor(t: TensorInfo): number {
    this.tensors.push(t);
    return this.tensors.length - 1;
  }

  value(id: number): Lowered {
    const known = this.#values.get(id);
    if (known) return known;
    const v = this.#lower(this.#nodes[id]);
    this.#values.set(id, v);
    return v;
  }

  #lower(node: GraphNode): Lowered {
    const group = this.layout.groupByEnd.get(node.id);
    if (group) return this.#emitGroup(group);
    const add = this.layout.addByEnd.get(node.id);
    if (add) return this.#emitAdd(add, node);
    const op = node.op;
    switch (op.kind) {
      case 'batchnorm': {
        const v = this.#unclipped(node.inputs[0], node.name);
        return { ...v, affine: foldBatchNorm(v.affine, op), clip: { relu: op.relu, ceiling: null }, codesFor: null };
      }
      case 'relu': {
        const v = this.value(node.inputs[0]);
        return { ...v, clip: { relu: true, ceiling: tighter(v.clip.relu ? v.clip.ceiling : null, op.ceiling) } };
      }
      case 'flatten':
        return this.value(node.inputs[0]);
      case 'maxpool':
        return this.#emitMaxPool(node as GraphNode<PoolNode>);
      case 'avgpool':
        return this.#emitSumPool(node, op.kernel, op.stride, op.padding);
      case 'globalavgpool': {
        const [, h, w] = this.tensors[this.value(node.inputs[0]).tensor].shape;
        return this.#emitSumPool(node, [h, w], [1, 1], [0, 0]);
      }
      case 'shortcutpad':
        throw new LoweringError(`${node.name}: a zero-pad shortcut can be lowered only as an input of a residual add`);
      default:
        throw new LoweringError(`${node.name}: a ${op.kind} node whose output is read by several nodes cannot be lowered`);
    }
  }

  /** A value with no ReLU pending (an op that does not commute with it reads it). */
  #unclipped(id: number, where: string): Lowered {
    const v = this.value(id);
    if (v.clip.relu) throw new LoweringError(`${where}: reads a ReLU that no conv or quantizer absorbs (${this.#nodes[id].name})`);
    return v;
  }

  /** A fixed-point tensor with one scale and no offset (what a shortcut or an add reads); returns its scale. */
  #plainScale(v: Lowered, where: string): number {
    if (v.affine.M.length !== 1 || v.affine.B[0] !== 0 || v.clip.relu) {
      throw new LoweringError(`${where}: its input must be a fixed-point tensor with one scale (a conv's or an add's output), not a per-channel or ReLU-pending value`);
    }
    return v.affine.M[0];
  }

  /** The activation scheme a layer's input is quantized with. */
  #schemeFor(layer: WeightedNode): ActivationScheme {
    const aq = layer.op.quant?.activation;
    if (aq) return quantizerScheme(aq, layer.name);
    const scheme = calibratedScheme(planFloatInput(this.plan, layer));
    this.notes.push(`${layer.name}: its float input is quantized after training to ${scheme.dtype} from the calibration range (post-training quantization)`);
    return scheme;
  }

  /** The integer tensor a layer reads: the image, its own activation codes, or codes quantized from a stream. */
  #inputFor(layer: WeightedNode): number {
    const source = this.#nodes[layer.inputs[0]];
    if (isKind(source, 'input')) {
      if (layer.op.quant?.activation) throw new LoweringError(`${layer.name}: a quantizer on the image input is not supported (the image enters through the int8 lookup table)`);
      return this.image.tensor;
    }
    const v = this.value(source.id);
    if (v.codesFor === layer.id) return v.tensor;
    const scheme = this.#schemeFor(layer);
    const inInfo = this.tensors[v.tensor];
    const { requant, quant } = activationQuant(v.affine, maxAbs(inInfo.range), scheme, v.clip, layer.name);
    const output = this.#addTensor({ name: `${layer.name}.input`, dtype: scheme.dtype, shape: inInfo.shape, scale: scheme.valueScale, range: scheme.range });
    this.ops.push({ kind: 'quantize', name: layer.name, input: v.tensor, output, requant, ...quant });
    return output;
  }

  #emitGroup(g: ConvGroup): Lowered {
    const input = this.#inputFor(g.layer);
    const name = this.#nodes[g.end].name;
    const t = g.target;
    switch (t.kind) {
      case 'codes': {
        const scheme = this.#schemeFor(t.consumer);
        const out = this.#emitConv(g, input, { kind: 'activation', scheme, name: `${t.consumer.name}.input` });
        return { tensor: out, affine: perTensor(scheme.valueScale), clip: NO_CLIP, codesFor: t.consumer.id };
      }
      case 'logits': {
        if (g.clip.relu) throw new LoweringError(`${name}: a ReLU on the model's output (the logits) is not supported`);
        return { tensor: this.#emitConv(g, input, { kind: 'logits', name: 'logits' }), affine: perTensor(1), clip: NO_CLIP, codesFor: null };
      }
      case 'stream':
      case 'join': {
        const scale = this.#streamScale(g.end);
        const shortcut = t.kind === 'join' ? this.#shortcut(t.other, scale, `${t.add.name}`) : null;
        const out = this.#emitConv(g, input, { kind: 'residual', scale, bits: this.plan.residualBits, shortcut, name });
        return { tensor: out, affine: perTensor(scale), clip: NO_CLIP, codesFor: null };
      }
      case 'shortcut': {
        // A second conv into a residual add: computed at the join's scale, then added exactly.
        const scale = this.#streamScale(t.join.end);
        const out = this.#emitConv(g, input, { kind: 'residual', scale, bits: 16, shortcut: null, name });
        return { tensor: out, affine: perTensor(scale), clip: NO_CLIP, codesFor: null };
      }
    }
  }

  /** What a conv's residual epilogue adds: identity, zero-pad shortcut or a conv at the join's scale. */
  #shortcut(id: number, scale: number, where: string): Shortcut {
    const node = this.#nodes[id];
    const group = this.layout.groupByEnd.get(id);
    if (group?.target.kind === 'shortcut') return { input: this.value(id).tensor, stride: 1, channelOffset: 0, ...IDENTITY };
    if (isKind(node, 'shortcutpad')) {
      const source = this.value(node.inputs[0]);
      const from = this.#plainScale(source, node.name);
      return { input: source.tensor, stride: node.op.stride, channelOffset: node.op.padBefore, ...rescale(from, scale, node.name) };
    }
    const source = this.value(id);
    return { input: source.tensor, stride: 1, channelOffset: 0, ...rescale(this.#plainScale(source, where), scale, `${where} identity shortcut`) };
  }

  #emitAdd({ add, clip }: StandaloneAdd, end: GraphNode): Lowered {
    const scale = this.#streamScale(end.id);
    const [a, b] = add.inputs.map((id) => {
      const v = this.value(id);
      return { input: v.tensor, ...rescale(this.#plainScale(v, add.name), scale, add.name) };
    });
    const { dtype, range } = streamInfo(this.plan.residualBits, clip);
    const shape = this.tensors[a.input].shape;
    const output = this.#addTensor({ name: end.name, dtype, shape, scale, range });
    this.ops.push({ kind: 'add', name: add.name, a, b, output, relu: clip.relu, ceiling: ceilingIn(clip, scale), bits: this.plan.residualBits });
    return { tensor: output, affine: perTensor(scale), clip: NO_CLIP, codesFor: null };
  }

  #emitSumPool(node: GraphNode, kernel: Pair, stride: Pair, padding: Pair): Lowered {
    const v = this.#unclipped(node.inputs[0], node.name);
    const inInfo = this.tensors[v.tensor];
    const [c, h, w] = inInfo.shape;
    const count = kernel[0] * kernel[1];
    const padded = padding[0] > 0 || padding[1] > 0;
    if (padded && v.affine.B.some((b) => b !== 0)) {
      this.notes.push(`${node.name}: padded positions count as integer 0, which is not real 0 for its input's offset`);
    }
    const [lo, hi] = inInfo.range;
    const shape = [c, ...windowOutSize(h, w, kernel, stride, padding)] as const;
    const range = [count * (padded ? Math.min(lo, 0) : lo), count * (padded ? Math.max(hi, 0) : hi)] as const;
    const output = this.#addTensor({ name: node.name, dtype: 'int32', shape, scale: inInfo.scale / count, range });
    this.ops.push({ kind: 'sumpool', name: node.name, input: v.tensor, output, kernel, stride, padding });
    const affine = { M: v.affine.M.map((m) => m / count), B: v.affine.B };
    return { tensor: output, affine, clip: NO_CLIP, codesFor: null };
  }

  #emitMaxPool(node: GraphNode<PoolNode>): Lowered {
    const v = this.value(node.inputs[0]);
    if (v.affine.M.some((m) => !(m > 0))) throw new LoweringError(`${node.name}: max pooling needs an input that grows with its integer values (a positive scale per channel)`);
    const inInfo = this.tensors[v.tensor];
    const { kernel, stride, padding } = node.op;
    const [c, h, w] = inInfo.shape;
    const shape = [c, ...windowOutSize(h, w, kernel, stride, padding)] as const;
    const output = this.#addTensor({ ...inInfo, name: node.name, shape });
    this.ops.push({ kind: 'maxpool', name: node.name, input: v.tensor, output, kernel, stride, padding });
    return { ...v, tensor: output };
  }

  #layerWeights(layer: WeightedNode): LoweredWeights {
    if (!layer.op.quant?.weight) this.notes.push(`${layer.name}: float weights quantized after training to int8 per output channel (post-training quantization; the fake-quantized model keeps them float)`);
    return layerWeights(layer, this.warn);
  }

  /** Emit one conv (a linear layer as a conv covering its input) with its epilogue; returns the output tensor. */
  #emitConv(g: ConvGroup, input: number, target: ConvTarget): number {
    const layer = g.layer;
    const path = layer.name;
    const inInfo = this.tensors[input];
    const geometry = convGeometry(layer, inInfo);
    const lw = this.#layerWeights(layer);
    const affine = foldAffine(layer.op, lw, inInfo.scale, g.bn?.op ?? null);
    const outC = lw.scale.length;
    const { kernel, stride, padding } = geometry;
    const shape = [outC, ...windowOutSize(inInfo.shape[1], inInfo.shape[2], kernel, stride, padding)] as const;
    const accBound = accumulatorBound(lw.weights, outC, inInfo.range, path);
    let requant: Requant;
    let epilogue: Epilogue;
    let info: Omit<TensorInfo, 'shape' | 'name'>;
    if (target.kind === 'activation') {
      const { requant: r, quant } = activationQuant(affine, accBound, target.scheme, g.clip, path);
      requant = r;
      epilogue = { kind: 'activation', ...quant };
      info = { dtype: target.scheme.dtype, scale: target.scheme.valueScale, range: target.scheme.range };
    } else if (target.kind === 'residual') {
      if (!(valueBound(affine, accBound, target.scale, 0) < TARGET_LIMIT)) throw new LoweringError(`${path}: requantized values to the residual scale could overflow int32`);
      requant = requantize(affine, target.scale, 0, path);
      epilogue = { kind: 'residual', relu: g.clip.relu, ceiling: ceilingIn(g.clip, target.scale), bits: target.bits, shortcut: target.shortcut };
      info = { ...streamInfo(target.bits, g.clip), scale: target.scale };
    } else {
      const top = this.plan.logitsMaxAbs || 1;
      const f = chooseFracBits(affine, accBound, top, 0, path, LOGITS_FRAC_BITS);
      const unit = top / 2 ** f;
      requant = requantize(affine, unit, 0, path);
      epilogue = { kind: 'logits' };
      const bound = Math.ceil(valueBound(affine, accBound, unit, 0));
      info = { dtype: 'int32', scale: unit, range: [-bound, bound] };
    }
    const output = this.#addTensor({ name: target.name, shape, ...info });
    const op: ConvOp = { kind: 'conv', name: path, input, output, inChannels: inInfo.shape[0], outChannels: outC, ...geometry, weights: lw.weights, requant, epilogue };
    this.ops.push(op);
    return output;
  }
}

/** A layer's integer weights: its quantizer's levels, or int8 per output channel after training for float weights. */
export function layerWeights(layer: WeightedNode, warn: (message: string) => void): LoweredWeights {
  const wq = layer.op.quant?.weight;
  return wq ? quantizedWeights(layer.op, wq, layer.name, warn) : calibratedWeights(layer.op);
}

type ConvTarget =
  | { readonly kind: 'activation'; readonly scheme: ActivationScheme; readonly name: string }
  | { readonly kind: 'residual'; readonly scale: number; readonly bits: number; readonly shortcut: Shortcut | null; readonly name: string }
  | { readonly kind: 'logits'; readonly name: string };

/** Kernel, stride, padding and groups of a conv; a linear layer's kernel covers its whole input. */
function convGeometry(layer: WeightedNode, input: TensorInfo): Pick<ConvOp, 'kernel' | 'stride' | 'padding' | 'groups'> {
  const [c, h, w] = input.shape;
  const op = layer.op;
  if (op.kind === 'conv') {
    if (op.inChannels !== c) throw new LoweringError(`${layer.name}: expects ${op.inChannels} input channels, its input has ${c}`);
    return { kernel: op.kernel, stride: op.stride, padding: op.padding, groups: op.groups };
  }
  if (op.inFeatures !== c * h * w) throw new LoweringError(`${layer.name}: expects ${op.inFeatures} input features, its input has ${c}x${h}x${w}`);
  return { kernel: [h, w], stride: [1, 1], padding: [0, 0], groups: 1 };
}

/** dtype and range of a fixed-point stream of `bits` after an optional ReLU. */
function streamInfo(bits: number, clip: Clip): Pick<TensorInfo, 'dtype' | 'range'> {
  const top = 2 ** (bits - 1) - 1;
  return { dtype: bits === 8 ? 'int8' : 'int16', range: [clip.relu ? 0 : -top - 1, top] };
}

/** A clipped ReLU's ceiling in units of `unit`, or null. */
function ceilingIn(clip: Clip, unit: number): number | null {
  return clip.ceiling === null ? null : Math.floor(clip.ceiling / unit);
}

function rescale(from: number, to: number, where: string): { mult: number; shift: number } {
  return from === to ? IDENTITY : toFixedMultiplier(from / to, where);
}

/**
 * The input lookup table (int8 or int16 values) with the normalization folded in. The codes are
 * rounded from the float32 quotient, as the simulated deployment's fake-quantize op computes it.
 */
function inputTable(norm: Normalization, plan: DeploymentPlan): Int16Array {
  const top = 2 ** (plan.input.bits - 1) - 1;
  const scale = plan.input.scale;
  return Int16Array.from(normalizationTable(norm), (v) => Math.max(-top, Math.min(top, roundHalfEven(Math.fround(v / scale)))));
}

function checkGraph(graph: Graph): void {
  if (!graph.nodes.some((n) => isWeighted(n) && n.op.quant !== null)) {
    throw new LoweringError('the model has no quantizers (a float checkpoint?): export needs a quantization-aware trained model');
  }
  const out = graph.nodes[graph.output];
  const ok = isWeighted(out) || (isKind(out, 'batchnorm') && isWeighted(graph.nodes[out.inputs[0]]));
  if (!ok) throw new LoweringError(`${out.name}: the model's output must be a linear or conv layer (logits), found ${out.op.kind}`);
}

/** The plan of the options, or one made from their calibration images. */
function planOf(graph: Graph, opts: LowerOptions): DeploymentPlan {
  if (opts.plan) return opts.plan;
  if (!opts.calibration) throw new LoweringError('lowering needs calibration images or a deployment plan');
  return planDeployment(graph, { ...opts, calibration: opts.calibration });
}

/** Lower a traced graph. Throws LoweringError naming the node that cannot be lowered, before anything is written. */
export function lowerGraph(graph: Graph, opts: LowerOptions): IntegerModel {
  checkGraph(graph);
  const plan = planOf(graph, opts);
  const notes: string[] = [];
  const warn = (m: string): void => {
    notes.push(m);
    opts.warn?.(m);
  };
  const layout = new LoweringLayout(graph);
  const [channels, height, width] = graph.nodes[0].shape;
  const lut = inputTable(opts.normalization, plan);
  const { bits: inputBits, scale } = plan.input;
  const imageInfo: TensorInfo = { name: 'image', dtype: inputBits === 8 ? 'int8' : 'int16', shape: [channels, height, width], scale, range: [Math.min(...lut), Math.max(...lut)] };
  notes.push(`input: normalization folded into an int${inputBits} lookup table (one scale ${scale.toPrecision(4)} for all channels)`);
  notes.push(`residual stream: int${plan.residualBits} fixed point, scales from ${plan.calibrationImages} calibration images with headroom x${plan.residualHeadroom}`);
  const image: Lowered = { tensor: 0, affine: perTensor(scale), clip: NO_CLIP, codesFor: null };
  const lowerer = new Lowerer(layout, plan, notes, warn, image);
  lowerer.tensors.push(imageInfo);
  lowerer.ops.push({ kind: 'input', output: 0, lut });
  if (layout.groupByEnd.get(graph.output)?.target.kind !== 'logits') {
    throw new LoweringError(`${graph.nodes[graph.output].name}: the model's output must be a linear or conv layer (with an optional batch norm) that nothing else reads`);
  }
  const output = lowerer.value(graph.output).tensor;
  const ir: IntegerModel = {
    version: IR_VERSION,
    meta: { ...opts.meta, normalization: { mean: [...opts.normalization.mean], std: [...opts.normalization.std] }, residualBits: plan.residualBits, notes },
    tensors: lowerer.tensors,
    ops: lowerer.ops,
    output,
  };
  validateIntegerModel(ir);
  return ir;
}

/** The [C, H, W] a model is traced on for lowering: the calibration images', else the given shape. */
function lowerShape(opts: LowerOptions & { readonly inputShape?: readonly [number, number, number] }): [number, number, number] {
  if (opts.calibration) return [opts.calibration.channels, opts.calibration.height, opts.calibration.width];
  if (opts.inputShape) return [...opts.inputShape];
  throw new LoweringError('lowering a model needs calibration images or its input shape');
}

/** Trace a trained, quantized model on its image shape and lower it. */
export function lowerModel(model: Module, opts: LowerOptions & { readonly inputShape?: readonly [number, number, number] }): IntegerModel {
  return lowerGraph(trace(model, lowerShape(opts)), opts);
}
