/**
 * Simulated deployment, a pass over the model graph: the fake-quantized model made to quantize
 * what the integer model quantizes, by the deployment plan (plan.ts), so that its predictions are
 * the device's up to float rounding and a final training phase can adapt the weights to them:
 * - the normalized image rounded to the lookup table's codes (one scale, its bits);
 * - every stream value (residual joins, conv outputs kept as fixed point, adds) rounded to its
 *   scale as the requantization rounds it, and clamped to its integer type; a zero-pad shortcut's
 *   values rounded to the scale of the join they are added at (the integer model rescales them);
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
import { roundingMulShift } from './int-ops.js';
import type { ConvOp, IntegerModel } from './ir.js';
import { getBackend } from '../backend/index.js';
import type { Module } from '../nn/module.js';
import { type ConvGroup, type DeploymentPlan, LoweringLayout, type WeightedNode, floatInputLayers, isWeighted, planFloatInput, planStreamScale, streamValues } from './plan.js';
import { type Clip, LoweringError, calibratedScheme, foldedBias } from './requant.js';

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
 * Training rounds stream values to their grid (what the gradient needs, one backend pass each);
 * evaluation computes every stored stream value and the logits as the integer model does, from the
 * accumulators recovered from the float conv outputs (see EpilogueRounding).
 */
export type SimulationMode = 'training' | { readonly evaluation: IntegerModel };

/**
 * A conv's integer epilogue in the integer model: from its float output y = M acc + B (per output
 * channel, after batch norm) the accumulator acc = round((y - B) / M), an integer, is recovered
 * exactly (float error is far below one accumulator unit), then rounded as the device rounds it:
 * roundingMulShift(acc, mult, shift) + bias, plus the rescaled shortcut, ReLU, ceiling and clamp.
 */
interface EpilogueRounding {
  readonly op: ConvOp;
  /** Real value of one unit of the output. */
  readonly unit: number;
  readonly M: Float64Array;
  readonly B: Float64Array;
}

function epilogueOf(ir: IntegerModel, g: ConvGroup): EpilogueRounding {
  const op = ir.ops.find((o): o is ConvOp => o.kind === 'conv' && o.name === g.layer.name);
  if (!op) throw new LoweringError(`${g.layer.name}: the integer model has no conv of this layer (lowered from another model?)`);
  const unit = ir.tensors[op.output].scale;
  const M = Float64Array.from(op.requant.mult, (m, c) => (unit * m) / 2 ** op.requant.shift[c]);
  return { op, unit, M, B: foldedBias(g.layer.op, g.bn?.op ?? null) };
}

/** What the device computes from conv outputs `y` (and the shortcut values `shortcut` at their scale, if any), as real values. */
function deviceValues(e: EpilogueRounding, y: Tensor, shortcut: { readonly values: Float32Array; readonly scale: number } | null): Tensor {
  const values = y.toArray();
  const channels = y.shape[1];
  const plane = values.length / (y.shape[0] * channels);
  const { mult, shift, bias } = e.op.requant;
  const epilogue = e.op.epilogue;
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const c = Math.floor(i / plane) % channels;
    const acc = Math.round((values[i] - e.B[c]) / e.M[c]);
    let v = roundingMulShift(acc, mult[c], shift[c]) + bias[c];
    if (epilogue.kind === 'residual') {
      const sc = epilogue.shortcut;
      if (sc && shortcut) v += roundingMulShift(Math.round(shortcut.values[i] / shortcut.scale), sc.mult, sc.shift);
      v = residualValue(v, epilogue.relu, epilogue.ceiling, epilogue.bits);
    }
    out[i] = v * e.unit;
  }
  return new Tensor(getBackend().upload(out, y.shape));
}

function fakeQuantized(spec: QuantSpec): ValueRewrite {
  return (y) => fakeQuantize(y, fixedOp(spec));
}

/** A stream value's grid at its scale, clamped to its integer type (and ReLU ceiling). */
function streamGrid(plan: DeploymentPlan, node: GraphNode, bits: number, clip: Clip): QuantSpec {
  const scale = planStreamScale(plan, node);
  return gridSpec(scale, clip.relu ? 0 : -(2 ** (bits - 1)), streamTop(bits, clip.relu ? clip.ceiling : null, scale));
}

/** The rewrite's parts: values replaced by node id, and nodes run another way. */
interface Rewrites {
  readonly values: Map<number, ValueRewrite>;
  readonly runs: Map<number, (inputs: Tensor[]) => Tensor>;
}

/** How each value the integer model stores at a fixed-point scale is rounded. */
function valueRewrites(graph: Graph, plan: DeploymentPlan, mode: SimulationMode): Rewrites {
  const layout = new LoweringLayout(graph);
  const values = new Map<number, ValueRewrite>();
  const runs = new Map<number, (inputs: Tensor[]) => Tensor>();
  const inputTop = 2 ** (plan.input.bits - 1) - 1;
  values.set(0, fakeQuantized(gridSpec(plan.input.scale, -inputTop, inputTop)));
  for (const { node, bits, clip } of streamValues(layout, plan.residualBits)) values.set(node, fakeQuantized(streamGrid(plan, graph.nodes[node], bits, clip)));
  if (mode === 'training') {
    for (const g of layout.groups) {
      if (g.target.kind !== 'join') continue;
      const other = graph.nodes[g.target.other];
      // A zero-pad shortcut from another stream is rescaled to the join's scale (rounded) before the add.
      if (isKind(other, 'shortcutpad')) values.set(other.id, fakeQuantized(gridSpec(planStreamScale(plan, graph.nodes[g.end]), -Infinity, Infinity)));
    }
    return { values, runs };
  }
  const ir = mode.evaluation;
  for (const g of layout.groups) {
    const t = g.target;
    if (t.kind === 'codes') continue;
    const e = epilogueOf(ir, g);
    if (t.kind !== 'join') {
      values.set(g.end, (y) => deviceValues(e, y, null));
      continue;
    }
    // The join: the conv's epilogue adds the shortcut (the add's other input) before ReLU and clamp;
    // a ReLU node after the add is then exact on the stored grid.
    const convInput = t.add.inputs[0] === t.other ? 1 : 0;
    const shortcut = e.op.epilogue.kind === 'residual' ? e.op.epilogue.shortcut : null;
    const shortcutScale = shortcut ? ir.tensors[shortcut.input].scale : 0;
    runs.set(t.add.id, (inputs) => deviceValues(e, inputs[convInput], shortcut ? { values: inputs[1 - convInput].toArray(), scale: shortcutScale } : null));
  }
  return { values, runs };
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
  const { values, runs } = valueRewrites(graph, plan, mode);
  const layers = postTrainingLayers(graph, plan);
  return {
    output: (node, value) => values.get(node.id)?.(value) ?? value,
    run: (node, inputs) => runs.get(node.id)?.(inputs) ?? layers.get(node.id)?.(inputs[0]) ?? null,
  };
}

/**
 * A model's forward for evaluation with its deployment simulated, given the integer model lowered
 * from it with `plan` (its weights as they are now): traced on one image's shape, run with the rewrite.
 */
export function simulatedForward(model: Module, imageShape: readonly [number, number, number], plan: DeploymentPlan, ir: IntegerModel): (x: Tensor) => Tensor {
  const graph = trace(model, [...imageShape]);
  const rewrite = deploymentRewrite(graph, plan, { evaluation: ir });
  return (x) => runGraph(graph, x, { rewrite });
}
