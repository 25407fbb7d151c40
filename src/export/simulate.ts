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
 */
import type { QuantSpec } from '../backend/backend.js';
import { type Graph, type GraphNode, type NodeRewrite, isKind, runGraph, trace } from '../graph/index.js';
import { uniformSpec } from '../quant/uniform.js';
import { fakeQuantize, fixedOp } from '../quant/quantizer.js';
import * as ops from '../tensor/ops.js';
import { Tensor } from '../tensor/tensor.js';
import { residualValue } from './engine.js';
import type { Module } from '../nn/module.js';
import { type ConvGroup, type DeploymentPlan, LoweringLayout, type WeightedNode, floatInputLayers, isWeighted, planFloatInput, planStreamScale, streamValues } from './plan.js';
import { LoweringError, calibratedScheme, foldedBias } from './requant.js';

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
 * Training rounds a stored stream value to its grid in one backend pass (what the gradient needs).
 * Evaluation also reproduces how the device rounds a conv's output: the product of the accumulator
 * and the rounding of its folded offset B separately, round(y/s - B/s) + round(B/s); without it a
 * stored value differs by one unit on a good share of the elements, enough to move later codes.
 */
export type SimulationMode = 'training' | 'evaluation';

function fakeQuantized(spec: QuantSpec): ValueRewrite {
  return (y) => fakeQuantize(y, fixedOp(spec));
}

/** y + shift[c] per channel of (N, C, ...), without a gradient (an eval-mode batch norm of unit scale). */
function addPerChannel(y: Tensor, shift: Float64Array): Tensor {
  const channels = shift.length;
  const [ones, zeros] = [Tensor.full([channels], 1), Tensor.zeros([channels])];
  return ops.batchNorm(y, ones, Tensor.fromArray(Float32Array.from(shift), [channels]), zeros, ones, { training: false, eps: 0, momentum: 0, relu: false });
}

/** The device's rounding of a conv group's output at a stream's scale (evaluation mode). */
function deviceRounded(g: ConvGroup, scale: number, clamp: QuantSpec): ValueRewrite {
  const unbounded = gridSpec(scale, -Infinity, Infinity);
  return (y) => {
    const B = foldedBias(g.layer.op, g.bn?.op ?? null);
    const product = fakeQuantize(addPerChannel(y, B.map((b) => -b)), fixedOp(unbounded));
    return fakeQuantize(addPerChannel(product, B.map((b) => Math.round(b / scale) * scale)), fixedOp(clamp));
  };
}

/** How each value the integer model stores at a fixed-point scale is rounded, by node id. */
function valueRewrites(graph: Graph, plan: DeploymentPlan, mode: SimulationMode): Map<number, ValueRewrite> {
  const layout = new LoweringLayout(graph);
  const values = new Map<number, ValueRewrite>();
  const inputTop = 2 ** (plan.input.bits - 1) - 1;
  values.set(0, fakeQuantized(gridSpec(plan.input.scale, -inputTop, inputTop)));
  for (const { node, bits, clip } of streamValues(layout, plan.residualBits)) {
    const scale = planStreamScale(plan, graph.nodes[node]);
    const clamp = gridSpec(scale, clip.relu ? 0 : -(2 ** (bits - 1)), streamTop(bits, clip.relu ? clip.ceiling : null, scale));
    const group = layout.groupByEnd.get(node);
    // A standalone add of values on its grid is exact: only clamped.
    values.set(node, mode === 'evaluation' && group ? deviceRounded(group, scale, clamp) : fakeQuantized(clamp));
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

/** A float-weight layer run with int8 weights and (when the lowering quantizes it) an 8-bit input. */
function postTrainingLayer(layer: WeightedNode, input: QuantSpec | null): (x: Tensor) => Tensor {
  const op = layer.op;
  const q = op.quant;
  return (x) => {
    let v = input ? fakeQuantize(x, fixedOp(input)) : q?.activation ? q.activation.apply(x, layer.name) : x;
    const w = fakeQuantize(op.weight, fixedOp(int8WeightSpec(op.weight)));
    v = op.kind === 'conv' ? ops.conv2d(v, w, op.bias, { stride: op.stride, padding: op.padding, groups: op.groups }) : ops.linear(v, w, op.bias);
    return q?.outputScale ? ops.scaleByAbs(v, q.outputScale) : v;
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

/**
 * The rewrite that makes `graph` (the traced fake-quantized model) compute its deployment under
 * `plan`. Errors name the node the plan cannot be applied to (a plan made for another model).
 */
export function deploymentRewrite(graph: Graph, plan: DeploymentPlan, mode: SimulationMode): NodeRewrite {
  const values = valueRewrites(graph, plan, mode);
  const layers = postTrainingLayers(graph, plan);
  return {
    output: (node, value) => values.get(node.id)?.(value) ?? value,
    run: (node, inputs) => layers.get(node.id)?.(inputs[0]) ?? null,
  };
}

/** A model's forward for evaluation with its deployment simulated: traced on one image's shape, run with the rewrite. */
export function simulatedForward(model: Module, imageShape: readonly [number, number, number], plan: DeploymentPlan): (x: Tensor) => Tensor {
  const graph = trace(model, [...imageShape]);
  const rewrite = deploymentRewrite(graph, plan, 'evaluation');
  return (x) => runGraph(graph, x, { rewrite });
}
