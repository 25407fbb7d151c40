/**
 * The deployment plan: what the lowering decides that the fake-quantized model does not see by
 * itself, decided once and then shared by the lowering (lower.ts) and by the training graph that
 * simulates the deployment (simulate.ts), so both quantize the same values the same way:
 * - the image's lookup table: its bits and its one scale;
 * - the fixed-point scale of every residual stream value (int16, or int8 with residualBits 8);
 * - the post-training 8-bit input range of each layer trained with a float input;
 * - the range of the logits (their integer unit).
 * The scales come from calibration ranges (calibrate.ts) of the model as it is when the plan is
 * made. A plan is plain JSON: the trainer stores it with the checkpoints of a run whose final
 * phase trained under it, and the export lowers with it instead of calibrating again.
 *
 * The layout (LoweringLayout) is the structural part of the lowering: which nodes fold into which
 * integer conv, where each conv's output goes, and which stream values share a scale.
 */
import { type Normalization, normalizationTable } from '../data/augment.js';
import { type AddNode, type BatchNormNode, type Graph, type GraphNode, consumers, isKind } from '../graph/index.js';
import { type CalibrationImages, calibrationRanges, type ValueRange } from './calibrate.js';
import { type Clip, LoweringError, type WeightedOp, rangeMaxAbs } from './requant.js';

export const NO_CLIP: Clip = { relu: false, ceiling: null };

export type WeightedNode = GraphNode<WeightedOp>;

/** Where the output of a conv group goes. */
export type GroupTarget =
  | { readonly kind: 'codes'; readonly consumer: WeightedNode }
  | { readonly kind: 'stream' }
  | { readonly kind: 'join'; readonly add: GraphNode<AddNode>; readonly other: number }
  | { readonly kind: 'shortcut'; readonly join: ConvGroup }
  | { readonly kind: 'logits' };

/** A conv or linear node with the batch norm and ReLU folded into it (and the add it owns). */
export interface ConvGroup {
  readonly layer: WeightedNode;
  readonly bn: GraphNode<BatchNormNode> | null;
  /** The node whose output is the group's value. */
  end: number;
  clip: Clip;
  target: GroupTarget;
}

/** An add that no conv owns, and the ReLU folded into it. */
export interface StandaloneAdd {
  readonly add: GraphNode<AddNode>;
  readonly clip: Clip;
}

export function isWeighted(node: GraphNode): node is WeightedNode {
  return isKind(node, 'conv', 'linear');
}

/** The structure of the lowered model: conv groups, their targets, and stream scale groups. */
export class LoweringLayout {
  readonly groups: ConvGroup[] = [];
  readonly groupByEnd = new Map<number, ConvGroup>();
  readonly addByEnd = new Map<number, StandaloneAdd>();
  readonly #consumers: readonly (readonly number[])[];
  readonly #streamRoot = new Map<number, number>();

  constructor(readonly graph: Graph) {
    this.#consumers = consumers(graph);
    for (const node of graph.nodes) if (isWeighted(node)) this.#addGroup(node);
    for (const node of graph.nodes) if (isKind(node, 'add')) this.#assignJoin(node);
    for (const g of this.groups) if (g.target.kind === 'stream') g.target = this.#directTarget(g);
    for (const g of this.groups) if (g.target.kind !== 'codes' && g.target.kind !== 'logits') this.#streamRoot.set(g.end, g.end);
    for (const end of this.addByEnd.keys()) this.#streamRoot.set(end, end);
    this.#joinScaleGroups();
  }

  /** The one node reading `id`'s output (null when none, several, or `id` is the model output). */
  sole(id: number): GraphNode | null {
    const c = this.#consumers[id];
    return c.length === 1 && id !== this.graph.output ? this.graph.nodes[c[0]] : null;
  }

  #addGroup(layer: WeightedNode): void {
    let end: GraphNode = layer;
    let bn: GraphNode<BatchNormNode> | null = null;
    let clip = NO_CLIP;
    const next = this.sole(end.id);
    if (next && isKind(next, 'batchnorm')) {
      bn = next;
      end = next;
      clip = { relu: next.op.relu, ceiling: null };
    }
    [end, clip] = this.#withRelu(end, clip);
    const g: ConvGroup = { layer, bn, end: end.id, clip, target: { kind: 'stream' } };
    this.groups.push(g);
    this.groupByEnd.set(g.end, g);
  }

  /** The ReLU nodes that alone read `node`, one after another, fold into it (the tightest ceiling wins). */
  #withRelu(node: GraphNode, clip: Clip): [GraphNode, Clip] {
    let [end, folded] = [node, clip];
    for (let next = this.sole(end.id); next && isKind(next, 'relu'); next = this.sole(end.id)) {
      [end, folded] = [next, { relu: true, ceiling: tighter(folded.relu ? folded.ceiling : null, next.op.ceiling) }];
    }
    return [end, folded];
  }

  /** The group whose value is `id` and that can take an add into its epilogue (no ReLU before the add). */
  #joinable(id: number, add: GraphNode): ConvGroup | null {
    const g = this.groupByEnd.get(id);
    return g && g.target.kind === 'stream' && !g.clip.relu && this.sole(id)?.id === add.id ? g : null;
  }

  #assignJoin(add: GraphNode<AddNode>): void {
    const [a, b] = add.inputs;
    const [end, clip] = this.#withRelu(add, { relu: add.op.relu, ceiling: null });
    const owner = a === b ? null : (this.#joinable(a, add) ?? this.#joinable(b, add));
    if (!owner) {
      this.addByEnd.set(end.id, { add, clip });
      return;
    }
    const other = owner.end === a ? b : a;
    const second = this.#joinable(other, add);
    this.groupByEnd.delete(owner.end);
    owner.end = end.id;
    owner.clip = clip;
    owner.target = { kind: 'join', add, other };
    this.groupByEnd.set(owner.end, owner);
    if (second) second.target = { kind: 'shortcut', join: owner };
  }

  /** Codes for the one quantized layer that reads the group's value (through max pools and flattens), or a stream. */
  #directTarget(g: ConvGroup): GroupTarget {
    if (g.end === this.graph.output) return { kind: 'logits' };
    let next = this.sole(g.end);
    while (next && isKind(next, 'maxpool', 'flatten')) next = this.sole(next.id);
    return next && isWeighted(next) ? { kind: 'codes', consumer: next } : { kind: 'stream' };
  }

  #find(id: number): number {
    let root = id;
    while (this.#streamRoot.get(root) !== root) root = this.#streamRoot.get(root)!;
    return root;
  }

  #union(a: number, b: number): void {
    if (this.#streamRoot.has(a) && this.#streamRoot.has(b)) this.#streamRoot.set(this.#find(a), this.#find(b));
  }

  /** Streams joined by an identity add share one scale (and a conv computed at a join's scale joins it). */
  #joinScaleGroups(): void {
    // A second conv into a join is stored at the join's scale: its values must fit that scale too.
    for (const g of this.groups) if (g.target.kind === 'join' || g.target.kind === 'shortcut') this.#union(g.target.kind === 'join' ? g.target.other : g.target.join.end, g.end);
    for (const [end, { add }] of this.addByEnd) for (const input of add.inputs) this.#union(input, end);
  }

  /** The stream values sharing a scale, by their representative. */
  scaleGroups(): Map<number, number[]> {
    const out = new Map<number, number[]>();
    for (const id of this.#streamRoot.keys()) {
      const root = this.#find(id);
      out.set(root, [...(out.get(root) ?? []), id]);
    }
    return out;
  }

  streamRootOf(id: number): number {
    if (!this.#streamRoot.has(id)) throw new LoweringError(`${this.graph.nodes[id].name}: not a fixed-point stream`);
    return this.#find(id);
  }
}

/** The lower of two ceilings (null: none). */
export function tighter(a: number | null, b: number | null): number | null {
  return a === null ? b : b === null ? a : Math.min(a, b);
}

export const PLAN_VERSION = 1;

export interface DeploymentPlan {
  readonly version: typeof PLAN_VERSION;
  /** The image after the normalization lookup table: integer bits and the one scale of all channels. */
  readonly input: { readonly bits: 8 | 16; readonly scale: number };
  readonly residualBits: 8 | 16;
  readonly residualHeadroom: number;
  /** Training images the scales were calibrated on. */
  readonly calibrationImages: number;
  /** The fixed-point scale of every stream value, by graph node name (values joined by identity share one). */
  readonly streams: Readonly<Record<string, number>>;
  /** The calibration range of the input of each layer trained with a float input (post-training 8 bits), by layer name. */
  readonly floatInputs: Readonly<Record<string, ValueRange>>;
  /** Largest |logit| over the calibration images (the logits' integer unit derives from it). */
  readonly logitsMaxAbs: number;
}

export interface PlanOptions {
  /** The normalization the model was trained with (folded into the input lookup table). */
  readonly normalization: Normalization;
  /** A few hundred training images for the fixed-point scales. */
  readonly calibration: CalibrationImages;
  readonly residualBits?: 8 | 16;
  /** Bits of the image after the lookup table (default 8). */
  readonly inputBits?: 8 | 16;
  /** Multiple of the calibration maximum that a stream's scale covers (default 2 for int16, 1 for int8). */
  readonly residualHeadroom?: number;
}

/** The one scale of the input table: the largest |normalized pixel| at the table's top code (a float32 value). */
export function inputTableScale(norm: Normalization, bits: 8 | 16): number {
  const table = normalizationTable(norm);
  return Math.fround(table.reduce((m, v) => Math.max(m, Math.abs(v)), 0) / (2 ** (bits - 1) - 1));
}

/** A stream value of the layout: its bits and the ReLU (and ceiling) applied before it is stored. */
export interface StreamValue {
  readonly node: number;
  readonly bits: 8 | 16;
  readonly clip: Clip;
}

/** Every stream value of the layout (conv outputs kept as fixed point, joins, adds). */
export function streamValues(layout: LoweringLayout, residualBits: 8 | 16): StreamValue[] {
  const out: StreamValue[] = [];
  for (const g of layout.groups) {
    if (g.target.kind === 'codes' || g.target.kind === 'logits') continue;
    // A second conv into a join is computed in 16 bits at the join's scale, then added.
    out.push({ node: g.end, bits: g.target.kind === 'shortcut' ? 16 : residualBits, clip: g.clip });
  }
  for (const [end, { clip }] of layout.addByEnd) out.push({ node: end, bits: residualBits, clip });
  return out;
}

/** The layers whose float input the lowering quantizes to 8 bits after training (not the image: the table is its quantization). */
export function floatInputLayers(graph: Graph): WeightedNode[] {
  return graph.nodes.filter((n): n is WeightedNode => isWeighted(n) && !n.op.quant?.activation && !isKind(graph.nodes[n.inputs[0]], 'input'));
}

function checkedBits(what: string, bits: number): 8 | 16 {
  if (bits !== 8 && bits !== 16) throw new LoweringError(`${what} must be 8 or 16, got ${bits}`);
  return bits;
}

/** Decide the plan for a traced graph from calibration images. */
export function planDeployment(graph: Graph, opts: PlanOptions): DeploymentPlan {
  const residualBits = checkedBits('residual bits', opts.residualBits ?? 16);
  const inputBits = checkedBits('input bits', opts.inputBits ?? 8);
  const residualHeadroom = opts.residualHeadroom ?? (residualBits === 16 ? 2 : 1);
  if (!(residualHeadroom >= 1)) throw new LoweringError(`residual headroom must be >= 1, got ${residualHeadroom}`);
  const layout = new LoweringLayout(graph);
  const ranges = calibrationRanges(graph, opts.calibration, opts.normalization);
  const top = 2 ** (residualBits - 1) - 1;
  const streams: Record<string, number> = {};
  for (const members of layout.scaleGroups().values()) {
    const max = Math.max(0, ...members.map((id) => rangeMaxAbs(ranges.values[id])));
    // All-zero calibration values: the scale of a maximum of 1.0.
    const scale = (residualHeadroom * (max > 0 ? max : 1)) / top;
    for (const id of members) streams[graph.nodes[id].name] = scale;
  }
  const floatInputs: Record<string, ValueRange> = {};
  for (const layer of floatInputLayers(graph)) floatInputs[layer.name] = { ...ranges.values[layer.inputs[0]] };
  return {
    version: PLAN_VERSION,
    input: { bits: inputBits, scale: inputTableScale(opts.normalization, inputBits) },
    residualBits,
    residualHeadroom,
    calibrationImages: ranges.images,
    streams,
    floatInputs,
    logitsMaxAbs: rangeMaxAbs(ranges.values[graph.output]),
  };
}

/** The scale of a stream value, or an error naming it when the plan (made for another graph) lacks it. */
export function planStreamScale(plan: DeploymentPlan, node: GraphNode): number {
  const scale = plan.streams[node.name];
  if (scale === undefined) throw new LoweringError(`${node.name}: the deployment plan has no scale for this stream value (a plan made for another model?)`);
  return scale;
}

/** The calibration range of a float-input layer's input, or an error naming the layer. */
export function planFloatInput(plan: DeploymentPlan, layer: GraphNode): ValueRange {
  const range = plan.floatInputs[layer.name];
  if (range === undefined) throw new LoweringError(`${layer.name}: the deployment plan has no range for this layer's float input (a plan made for another model?)`);
  return range;
}

const positive = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;
const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** A plan read back from JSON (a checkpoint sidecar), checked field by field; errors name `source` and the field. */
export function readDeploymentPlan(value: unknown, source: string): DeploymentPlan {
  const fail = (field: string, why: string): never => {
    throw new LoweringError(`${source}: deployment plan ${field} ${why}`);
  };
  const p = value as Record<string, unknown> | null;
  if (typeof p !== 'object' || p === null || Array.isArray(p)) fail('', 'is not an object');
  if (p!.version !== PLAN_VERSION) fail('version', `must be ${PLAN_VERSION}, got ${JSON.stringify(p!.version)}`);
  const input = p!.input as Record<string, unknown> | null;
  if (typeof input !== 'object' || input === null) fail('input', 'is missing');
  if (input!.bits !== 8 && input!.bits !== 16) fail('input.bits', `must be 8 or 16, got ${JSON.stringify(input!.bits)}`);
  if (!positive(input!.scale)) fail('input.scale', 'must be a positive number');
  if (p!.residualBits !== 8 && p!.residualBits !== 16) fail('residualBits', `must be 8 or 16, got ${JSON.stringify(p!.residualBits)}`);
  if (!finite(p!.residualHeadroom) || (p!.residualHeadroom as number) < 1) fail('residualHeadroom', 'must be a number >= 1');
  if (!Number.isInteger(p!.calibrationImages) || (p!.calibrationImages as number) < 1) fail('calibrationImages', 'must be a positive integer');
  if (!finite(p!.logitsMaxAbs) || (p!.logitsMaxAbs as number) < 0) fail('logitsMaxAbs', 'must be a non-negative number');
  const streams = p!.streams as Record<string, unknown> | null;
  if (typeof streams !== 'object' || streams === null || Array.isArray(streams)) fail('streams', 'must be an object of scales by node name');
  for (const [name, s] of Object.entries(streams!)) if (!positive(s)) fail(`streams["${name}"]`, 'must be a positive number');
  const floats = p!.floatInputs as Record<string, unknown> | null;
  if (typeof floats !== 'object' || floats === null || Array.isArray(floats)) fail('floatInputs', 'must be an object of ranges by layer name');
  for (const [name, r] of Object.entries(floats!)) {
    const range = r as Record<string, unknown> | null;
    if (typeof range !== 'object' || range === null || !finite(range.min) || !finite(range.max) || (range.min as number) > (range.max as number)) {
      fail(`floatInputs["${name}"]`, 'must be {min, max} with min <= max');
    }
  }
  return p as unknown as DeploymentPlan;
}
