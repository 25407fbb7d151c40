/**
 * Simulated deployment, a pass over the model graph: the fake-quantized model made to quantize
 * what the integer model quantizes, by the deployment plan (plan.ts), so that its predictions are
 * the device's up to float rounding and a final training phase can adapt the weights to them:
 * - the normalized image rounded to the lookup table's codes (one scale, its bits);
 * - every stream value (residual joins, conv outputs kept as fixed point, adds) rounded to its
 *   scale and clamped to its integer type; a zero-pad shortcut's values rounded to the scale of the
 *   join they are added at (the integer model rescales them there);
 * - a layer trained with float weights: weights rounded to int8 per output channel and its float
 *   input (not the image) to the 8-bit codes of its calibration range, as the lowering does after
 *   training.
 * Gradients pass straight through each rounding (zero where a value is clamped). Batch norm needs
 * no simulation: the integer model folds it into the requantization of the conv before it, which
 * is the eval-mode batch norm of the same conv output; the final phase freezes its statistics.
 *
 * Evaluation (no gradient) is exact instead: it reads the lowered model of the same graph and plan
 * and computes every value the integer model stores with the engine's own arithmetic (engine.ts,
 * int-ops.ts): each conv's integer accumulator is recovered from the float conv output (the float
 * error is far below half a unit), then requantized with the op's multiplier, shift and bias, its
 * shortcut added and its epilogue applied; a layer reading a stream gets the `quantize` op's codes.
 * Its logits are the integer logits times their unit: float32 rounding of the conv output near a
 * rounding boundary would otherwise move one stream unit or activation code, and that spreads.
 * Where the native addon loads, its int8 epilogue kernels compute those values (host/simulation.ts);
 * this file's loops are the reference and the fallback, with the same values.
 */
import type { QuantSpec } from '../backend/backend.js';
import { type Graph, type GraphNode, type NodeRewrite, isKind, runGraph, trace } from '../graph/index.js';
import { uniformSpec } from '../quant/uniform.js';
import { fakeQuantize, fixedOp } from '../quant/quantizer.js';
import * as ops from '../tensor/ops.js';
import { Tensor } from '../tensor/tensor.js';
import { quantizeValue, residualValue } from './engine.js';
import { roundingMulShift } from './int-ops.js';
import type { ActivationQuant, ConvOp, Epilogue, IntegerModel, QuantizeOp, Requant, TensorInfo } from './ir.js';
import type { NativeBuf } from '../backend/native/addon.js';
import { type NativeSimulation, nativeSimulation } from './host/simulation.js';
import { layerWeights } from './lower.js';
import type { Module } from '../nn/module.js';
import { isQuantizedLayer } from '../quant/qlayers.js';
import { type ConvGroup, type DeploymentPlan, LoweringLayout, type WeightedNode, floatInputLayers, isWeighted, planFloatInput, planStreamScale, streamValues } from './plan.js';
import { type Affine, LoweringError, calibratedScheme, foldAffine } from './requant.js';

/** Round to a grid of `scale` and clamp to integer codes [lo, hi] (infinite: no clamp). */
function gridSpec(scale: number, lo: number, hi: number): QuantSpec {
  return uniformSpec(scale, 0, scale, 0, 1, { lo, hi });
}

/** The largest code of a stream of `bits` below its ReLU ceiling, if any. */
function streamTop(bits: number, ceiling: number | null, scale: number): number {
  const top = 2 ** (bits - 1) - 1;
  return ceiling === null ? top : Math.min(top, Math.floor(ceiling / scale));
}

type ValueRewrite = (value: Tensor) => Tensor;

/**
 * Training rounds a stored stream value to its grid in one backend pass (what the gradient needs);
 * evaluation computes the integer model's values exactly from the lowered model (see the file comment).
 */
export type SimulationMode = 'training' | 'evaluation';

function fakeQuantized(spec: QuantSpec): ValueRewrite {
  return (y) => fakeQuantize(y, fixedOp(spec));
}

/** How each value the integer model stores at a fixed-point scale is rounded, by node id. */
function valueRewrites(graph: Graph, plan: DeploymentPlan): Map<number, ValueRewrite> {
  const layout = new LoweringLayout(graph);
  const values = new Map<number, ValueRewrite>();
  const inputTop = 2 ** (plan.input.bits - 1) - 1;
  values.set(0, fakeQuantized(gridSpec(plan.input.scale, -inputTop, inputTop)));
  for (const { node, bits, clip } of streamValues(layout, plan.residualBits)) {
    const scale = planStreamScale(plan, graph.nodes[node]);
    const clamp = gridSpec(scale, clip.relu ? 0 : -(2 ** (bits - 1)), streamTop(bits, clip.relu ? clip.ceiling : null, scale));
    values.set(node, fakeQuantized(clamp));
  }
  for (const g of layout.groups) {
    if (g.target.kind !== 'join') continue;
    const other = graph.nodes[g.target.other];
    // A zero-pad shortcut from another stream is rescaled to the join's scale (rounded) before the add.
    if (isKind(other, 'shortcutpad')) values.set(other.id, fakeQuantized(gridSpec(planStreamScale(plan, graph.nodes[g.end]), -Infinity, Infinity)));
  }
  return values;
}

/** Symmetric int8 per output channel, as the lowering quantizes float weights after training. */
function int8WeightSpec(weight: Tensor): QuantSpec {
  const w = weight.toArray();
  const outC = weight.shape[0];
  const per = w.length / outC;
  const scale = new Float32Array(outC);
  for (let c = 0; c < outC; c++) {
    let m = 0;
    for (let i = c * per; i < (c + 1) * per; i++) m = Math.max(m, Math.abs(w[i]));
    scale[c] = m > 0 ? m / 127 : 1;
  }
  return { ...gridSpec(1, -127, 127), channels: outC, scale, offset: new Float32Array(outC), outScale: scale, outOffset: new Float32Array(outC) };
}

/** A conv or linear layer's float op on `x` with weights `w`, its bias and EWGS's |output scale|. */
function layerOp(layer: WeightedNode, x: Tensor, w: Tensor): Tensor {
  const op = layer.op;
  const v = op.kind === 'conv' ? ops.conv2d(x, w, op.bias, { stride: op.stride, padding: op.padding, groups: op.groups }) : ops.linear(x, w, op.bias);
  return op.quant?.outputScale ? ops.scaleByAbs(v, op.quant.outputScale) : v;
}

/** A float-weight layer run with int8 weights and (when the lowering quantizes it) an 8-bit input. */
function postTrainingLayer(layer: WeightedNode, input: QuantSpec | null): (x: Tensor) => Tensor {
  const q = layer.op.quant;
  return (x) => {
    const v = input ? fakeQuantize(x, fixedOp(input)) : q?.activation ? q.activation.apply(x, layer.name) : x;
    return layerOp(layer, v, fakeQuantize(layer.op.weight, fixedOp(int8WeightSpec(layer.op.weight))));
  };
}

/** The input spec of a float-input layer: the calibrated 8-bit codes the lowering gives it. */
function calibratedInputSpec(plan: DeploymentPlan, layer: GraphNode): QuantSpec {
  const scheme = calibratedScheme(planFloatInput(plan, layer));
  return gridSpec(scheme.valueScale, scheme.range[0], scheme.range[1]);
}

function postTrainingLayers(graph: Graph, plan: DeploymentPlan): Map<number, (x: Tensor) => Tensor> {
  const floatInputs = new Set(floatInputLayers(graph).map((l) => l.id));
  const out = new Map<number, (x: Tensor) => Tensor>();
  for (const node of graph.nodes) {
    if (!isWeighted(node) || node.op.quant?.weight) continue;
    if (node.module === null) throw new LoweringError(`${node.name}: a float-weight layer outside a module cannot be simulated`);
    out.set(node.id, postTrainingLayer(node, floatInputs.has(node.id) ? calibratedInputSpec(plan, node) : null));
  }
  for (const id of floatInputs) {
    const layer = graph.nodes[id] as WeightedNode;
    if (!out.has(id)) out.set(id, (x) => layer.module!.call(fakeQuantize(x, fixedOp(calibratedInputSpec(plan, layer)))));
  }
  return out;
}

// ---- evaluation: the integer model's values, exactly -------------------------------------------

/**
 * The integer nearest x, where x is known to be within float error of an integer (so ties do not
 * arise): Math.floor is inlined by V8, Math.round is several times slower on these loops.
 */
function nearest(x: number): number {
  return Math.floor(x + 0.5);
}

/** The shortcut values a residual epilogue adds, at their tensor's scale, and its rescaling. */
interface ShortcutValues {
  readonly values: Float32Array;
  readonly scale: number;
  readonly mult: number;
  readonly shift: number;
}

type ResidualEpilogue = Extract<Epilogue, { kind: 'residual' }>;

/** One channel plane of a conv's output: elements first .. end - 1, channel c (the op's numbers as arguments). */
interface Plane {
  readonly conv: Float32Array;
  readonly values: Float32Array;
  readonly first: number;
  readonly end: number;
  readonly c: number;
  /** The accumulator's real unit and offset before batch norm. */
  readonly m: number;
  readonly b: number;
  /** The real value of the output's integer 1. */
  readonly unit: number;
}

// One small function per epilogue kind, so that V8 inlines the engine's functions into each loop
// (one function holding all the loops runs out of its inlining budget and calls them: ~10x slower).

function activationPlane(p: Plane, e: ActivationQuant, r: Requant): void {
  const { conv, values, first, end, c, m, b, unit } = p;
  for (let i = first; i < end; i++) values[i] = unit * quantizeValue(e, r, c, m === 0 ? 0 : nearest((conv[i] - b) / m));
}

function requantizedPlane(p: Plane, mult: number, shift: number, bias: number): void {
  const { conv, values, first, end, m, b, unit } = p;
  for (let i = first; i < end; i++) values[i] = unit * (roundingMulShift(m === 0 ? 0 : nearest((conv[i] - b) / m), mult, shift) + bias);
}

function residualPlane(p: Plane, mult: number, shift: number, bias: number, e: ResidualEpilogue, sc: ShortcutValues | null): void {
  const { conv, values, first, end, m, b, unit } = p;
  const { relu, ceiling, bits } = e;
  const [scValues, scScale, scMult, scShift] = sc ? [sc.values, sc.scale, sc.mult, sc.shift] : [null, 1, 0, 0];
  for (let i = first; i < end; i++) {
    let v = roundingMulShift(m === 0 ? 0 : nearest((conv[i] - b) / m), mult, shift) + bias;
    if (scValues) v += roundingMulShift(nearest(scValues[i] / scScale), scMult, scShift);
    values[i] = unit * residualValue(v, relu, ceiling, bits);
  }
}

/**
 * A conv's output values (real units) from its float output `conv` (before batch norm): the
 * accumulator acc = (conv - B) / M, rounded, then the op's requantization, shortcut and epilogue
 * as engine.ts computes them, one channel plane after another.
 */
function convValues(op: ConvOp, out: TensorInfo, a: Affine, conv: Float32Array, shortcut: { readonly values: Float32Array; readonly scale: number } | null): Float32Array {
  const values = new Float32Array(conv.length);
  const { epilogue: e, requant: r } = op;
  const [channels, h, w] = out.shape;
  const plane = h * w;
  const sc = e.kind === 'residual' && e.shortcut && shortcut ? { ...shortcut, mult: e.shortcut.mult, shift: e.shortcut.shift } : null;
  for (let first = 0; first < conv.length; first += plane) {
    const c = (first / plane) % channels;
    const p: Plane = { conv, values, first, end: first + plane, c, m: a.M[c], b: a.B[c], unit: out.scale };
    if (e.kind === 'activation') activationPlane(p, e, r);
    else if (e.kind === 'logits') requantizedPlane(p, r.mult[c], r.shift[c], r.bias[c]);
    else residualPlane(p, r.mult[c], r.shift[c], r.bias[c], e, sc);
  }
  return values;
}

/** A `quantize` op's codes (real units) of input values `x` on its input tensor's grid. */
function quantizeValues(q: QuantizeOp, input: TensorInfo, out: TensorInfo, x: Float32Array): Float32Array {
  const values = new Float32Array(x.length);
  const [channels, h, w] = input.shape;
  const plane = h * w;
  const perChannel = q.requant.mult.length > 1;
  const [unit, step, r] = [out.scale, input.scale, q.requant];
  for (let first = 0; first < x.length; first += plane) {
    const c = perChannel ? (first / plane) % channels : 0;
    const end = first + plane;
    for (let i = first; i < end; i++) values[i] = unit * quantizeValue(q, r, c, nearest(x[i] / step));
  }
  return values;
}

/** The layer's weights as lowered (float weights: the post-training int8 values), in real units. */
function loweredWeightTensor(layer: WeightedNode, scale: Float64Array, levels: Int32Array, codes: Uint8Array): Tensor {
  const per = codes.length / scale.length;
  return Tensor.fromArray(Float32Array.from(codes, (k, i) => levels[k] * scale[Math.floor(i / per)]), layer.op.weight.shape);
}

/** The lowered model's conv and quantize ops by layer name (the names lower.ts gives them). */
function loweredOps(ir: IntegerModel): { convs: Map<string, ConvOp>; quantizes: Map<string, QuantizeOp> } {
  const convs = new Map<string, ConvOp>();
  const quantizes = new Map<string, QuantizeOp>();
  for (const op of ir.ops) {
    if (op.kind === 'conv') convs.set(op.name, op);
    if (op.kind === 'quantize') quantizes.set(op.name, op);
  }
  return { convs, quantizes };
}

/**
 * Which code computes the evaluation's stored integers: the addon's kernels (on the native
 * backend's own buffers where the tensors are, else on NCHW copies), the addon's kernels on NCHW
 * copies always, or this file's loops.
 */
export type EpilogueEngine = 'native' | 'native-nchw' | 'js';

/** The two computations the exact evaluation needs, on tensors. */
interface Epilogues {
  /** A conv's stored values from its float output `conv`, which it consumes (the result may be conv itself). */
  conv(op: ConvOp, out: TensorInfo, a: Affine, conv: Tensor, shortcut: { readonly value: Tensor; readonly scale: number } | null): Tensor;
  /** A quantize op's codes of x (a new tensor). */
  quantize(q: QuantizeOp, input: TensorInfo, out: TensorInfo, x: Tensor): Tensor;
}

type ArrayConv = (op: ConvOp, out: TensorInfo, a: Affine, conv: Float32Array, shortcut: { readonly values: Float32Array; readonly scale: number } | null) => Float32Array;
type ArrayQuantize = (q: QuantizeOp, input: TensorInfo, out: TensorInfo, x: Float32Array) => Float32Array;

/** Epilogues on NCHW copies of the tensors. */
function arrayEpilogues(conv: ArrayConv, quantize: ArrayQuantize): Epilogues {
  return {
    conv: (op, out, a, y, sc) => {
      const v = Tensor.fromArray(conv(op, out, a, y.toArray(), sc && { values: sc.value.toArray(), scale: sc.scale }), y.shape);
      y.dispose();
      return v;
    },
    quantize: (q, input, out, x) => Tensor.fromArray(quantize(q, input, out, x.toArray()), x.shape),
  };
}

function nativeArrayEpilogues(native: NativeSimulation): Epilogues {
  return arrayEpilogues(
    (op, out, a, conv, sc) => native.conv(op.name, conv, a.M, a.B, out.scale, sc?.values ?? null, sc?.scale ?? 1),
    (q, input, out, x) => native.quantize(q.name, x, input.scale, out.scale),
  );
}

function isNative(t: Tensor): boolean {
  return t.buf.backend === 'native';
}

/** The addon's kernels on the native backend's buffers in their own layout; NCHW copies for other tensors. */
function nativeBufferEpilogues(native: NativeSimulation): Epilogues {
  const copies = nativeArrayEpilogues(native);
  const { convBuffer, quantizeBuffer } = native;
  if (!convBuffer || !quantizeBuffer) return copies;
  return {
    conv: (op, out, a, y, sc) => {
      if (!isNative(y) || (sc && !isNative(sc.value))) return copies.conv(op, out, a, y, sc);
      convBuffer.call(native, op.name, y.buf as NativeBuf, a.M, a.B, out.scale, sc ? (sc.value.buf as NativeBuf) : null, sc?.scale ?? 1);
      return y;
    },
    quantize: (q, input, out, x) => (isNative(x) ? new Tensor(quantizeBuffer.call(native, q.name, x.buf as NativeBuf, input.scale, out.scale)) : copies.quantize(q, input, out, x)),
  };
}

const JS_EPILOGUES: Epilogues = arrayEpilogues(convValues, quantizeValues);

/** The engine asked for (default: the addon's where it loads). */
function epiloguesFor(ir: IntegerModel, engine: EpilogueEngine | undefined): Epilogues {
  if (engine === 'js') return JS_EPILOGUES;
  const native = nativeSimulation(ir);
  if ('unavailable' in native) {
    if (engine !== undefined) throw new Error(`simulated evaluation: the native epilogues are not available: ${native.unavailable}`);
    return JS_EPILOGUES;
  }
  return engine === 'native-nchw' ? nativeArrayEpilogues(native) : nativeBufferEpilogues(native);
}

/**
 * A layer in evaluation: its input already the integer model's codes (a conv's epilogue made them,
 * or the `quantize` op `q` makes them now, or the image's table), so not quantized again.
 */
function exactLayer(layer: WeightedNode, weights: () => Tensor, q: QuantizeOp | undefined, ir: IntegerModel, epilogues: Epilogues): (x: Tensor) => Tensor {
  const run = ((): ((x: Tensor) => Tensor) => {
    if (!layer.op.quant?.weight) return (x) => layerOp(layer, x, weights());
    const m = layer.module;
    if (!m || !isQuantizedLayer(m)) throw new LoweringError(`${layer.name}: a quantized layer outside a quantized module cannot be simulated`);
    return (x) => m.forwardQuantized(x);
  })();
  if (!q) return run;
  return (x) => {
    const codes = epilogues.quantize(q, ir.tensors[q.input], ir.tensors[q.output], x);
    const y = run(codes);
    codes.dispose();
    return y;
  };
}

/** The nodes of a conv group, its layer first and its end last (each the sole reader of the one before). */
function groupChain(layout: LoweringLayout, g: ConvGroup): GraphNode[] {
  const chain: GraphNode[] = [g.layer];
  while (chain[chain.length - 1].id !== g.end) {
    const next = layout.sole(chain[chain.length - 1].id);
    if (!next) throw new LoweringError(`${g.layer.name}: the conv group's nodes are not a chain`);
    chain.push(next);
  }
  return chain;
}

/**
 * The evaluation rewrite: every value the integer model `ir` (lowered from `graph` under `plan`)
 * stores, computed as it does. A conv group runs its layer, keeps the float output, and computes
 * its stored value (the epilogue) at its join (where the shortcut is an input) or its end; the
 * nodes in between (batch norm, ReLU, the add) are not computed: they pass on an empty placeholder
 * that only the group's next node reads.
 */
function exactRewrite(graph: Graph, plan: DeploymentPlan, ir: IntegerModel, engine: EpilogueEngine | undefined): NodeRewrite {
  const layout = new LoweringLayout(graph);
  const epilogues = epiloguesFor(ir, engine);
  // The image's table and the standalone adds (exact on their grid); conv groups are computed below.
  const values = valueRewrites(graph, plan);
  const { convs, quantizes } = loweredOps(ir);
  const steps = new Map<number, (inputs: Tensor[]) => Tensor>();
  const placeholder = (): Tensor => Tensor.zeros([0]);
  const ignore = (): void => {};
  for (const g of layout.groups) {
    const { layer } = g;
    const op = convs.get(layer.name);
    if (!op) throw new LoweringError(`${layer.name}: the lowered model has no conv op for this layer (lowered from another model?)`);
    const lw = layerWeights(layer, ignore);
    const affine = foldAffine(layer.op, lw, ir.tensors[op.input].scale, null);
    const e = op.epilogue;
    const shortcut = e.kind === 'residual' && e.shortcut && g.target.kind === 'join' ? { node: g.target.other, scale: ir.tensors[e.shortcut.input].scale } : null;
    // The join adds a zero-pad shortcut's values at their own scale, rescaled as the engine does.
    if (shortcut && isKind(graph.nodes[shortcut.node], 'shortcutpad')) values.delete(shortcut.node);
    const out = ir.tensors[op.output];
    const chain = groupChain(layout, g);
    const at = g.target.kind === 'join' ? g.target.add.id : g.end;
    let weights: Tensor | null = null;
    const forward = exactLayer(layer, () => (weights ??= loweredWeightTensor(layer, lw.scale, lw.weights.levels, lw.weights.codes)), quantizes.get(layer.name), ir, epilogues);
    /** This forward's conv output, then its stored value, between the nodes of the group. */
    let held: Tensor | null = null;
    const take = (): Tensor => {
      const t = held!;
      held = null;
      return t;
    };
    const pass = (node: GraphNode, value: Tensor): Tensor => {
      if (node.id === g.end) return value;
      held = value;
      return placeholder();
    };
    for (const node of chain) {
      values.delete(node.id);
      const epilogueHere = node.id === at;
      steps.set(node.id, (inputs) => {
        if (node.id === layer.id && !epilogueHere) return pass(node, forward(inputs[0]));
        if (!epilogueHere) return node.id === g.end ? take() : placeholder();
        const conv = node.id === layer.id ? forward(inputs[0]) : take();
        const sc = shortcut && { value: inputs[node.inputs.indexOf(shortcut.node)], scale: shortcut.scale };
        return pass(node, epilogues.conv(op, out, affine, conv, sc));
      });
    }
  }
  return {
    output: (node, value) => values.get(node.id)?.(value) ?? value,
    run: (node, inputs) => steps.get(node.id)?.(inputs) ?? null,
  };
}

/**
 * The rewrite that makes `graph` (the traced fake-quantized model) compute its deployment under
 * `plan`: for training, with straight-through gradients; for evaluation, exactly the values of `ir`,
 * the integer model lowered from the same graph and plan (and the model's weights as they are now),
 * computed by `engine` (default: the addon's kernels where it loads, else this file's loops).
 * Errors name the node the plan or the lowered model cannot be applied to (made for another model).
 */
export function deploymentRewrite(graph: Graph, plan: DeploymentPlan, mode: 'training'): NodeRewrite;
export function deploymentRewrite(graph: Graph, plan: DeploymentPlan, mode: 'evaluation', ir: IntegerModel, engine?: EpilogueEngine): NodeRewrite;
export function deploymentRewrite(graph: Graph, plan: DeploymentPlan, mode: SimulationMode, ir?: IntegerModel, engine?: EpilogueEngine): NodeRewrite {
  if (mode === 'evaluation') return exactRewrite(graph, plan, ir!, engine);
  const values = valueRewrites(graph, plan);
  const layers = postTrainingLayers(graph, plan);
  return {
    output: (node, value) => values.get(node.id)?.(value) ?? value,
    run: (node, inputs) => layers.get(node.id)?.(inputs[0]) ?? null,
  };
}

/**
 * A model's forward for evaluation with its deployment simulated: traced on one image's shape, run
 * with the exact rewrite of `ir`, the integer model lowered from it under `plan` (lower again after
 * the weights change); `engine` as deploymentRewrite's.
 */
export function simulatedForward(model: Module, imageShape: readonly [number, number, number], plan: DeploymentPlan, ir: IntegerModel, engine?: EpilogueEngine): (x: Tensor) => Tensor {
  const graph = trace(model, [...imageShape]);
  const rewrite = deploymentRewrite(graph, plan, 'evaluation', ir, engine);
  return (x) => runGraph(graph, x, { rewrite });
}
