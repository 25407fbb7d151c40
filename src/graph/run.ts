/**
 * Run a traced graph on a batch: each layer node calls its layer, each functional node its op,
 * in graph order. Results equal the model's own forward (the same ops in the same order); passes
 * use it to see every intermediate value (calibration ranges), and training runs it with the
 * fusions of fuse.ts. Without gradients, a value is freed as soon as its last reader has run.
 */
import type { BatchNorm } from '../nn/layers.js';
import type { QConv2d } from '../quant/qlayers.js';
import { addReluFakeQuantize, batchNormFakeQuantize } from '../quant/quantizer.js';
import * as ops from '../tensor/ops.js';
import { type Tensor, isGradEnabled } from '../tensor/tensor.js';
import type { Shape } from '../backend/backend.js';
import type { Module } from '../nn/module.js';
import { type TrainingFusion, fuseForTraining, fusedInputOp } from './fuse.js';
import { type Graph, GraphError, type GraphNode, consumers } from './graph.js';
import { trace } from './trace.js';

function runNode(node: GraphNode, inputs: Tensor[]): Tensor {
  if (node.module) return node.module.call(inputs[0]);
  const op = node.op;
  switch (op.kind) {
    case 'add':
      return op.relu ? ops.addRelu(inputs[0], inputs[1]) : ops.add(inputs[0], inputs[1]);
    case 'relu':
      if (op.ceiling !== null) break;
      return ops.relu(inputs[0]);
    case 'globalavgpool':
      return ops.globalAvgPool(inputs[0]);
    case 'flatten':
      return ops.flatten(inputs[0]);
  }
  throw new GraphError(`${node.name}: a functional ${op.kind} node has no op to run`);
}

/**
 * Changes a pass makes to what the graph computes (the simulated deployment: export/simulate.ts):
 * a node's output replaced by a function of it, or a node run another way.
 */
export interface NodeRewrite {
  /** The value that node `node` passes on, given its output (node 0: the input). */
  output?(node: GraphNode, value: Tensor): Tensor;
  /** The node's output computed another way, or null to run it as traced. */
  run?(node: GraphNode, inputs: Tensor[]): Tensor | null;
}

export interface RunOptions {
  /** Sees every node's output (node 0: the input itself) while it is alive, after any rewrite. */
  readonly observe?: (node: GraphNode, value: Tensor) => void;
  /** Fused training ops (fuse.ts). */
  readonly fusion?: TrainingFusion;
  readonly rewrite?: NodeRewrite;
}

/**
 * One node, fused where the fusion says and its op can run now: a batch norm that quantizes the
 * next convolution's input leaves it in `quantized` and has no output of its own (null); an
 * add+ReLU returns the join and leaves the quantized copy; a convolution takes its input from there.
 */
function runStep(graph: Graph, node: GraphNode, inputs: Tensor[], fusion: TrainingFusion | undefined, quantized: Map<number, Tensor>): Tensor | null {
  const conv = fusion?.get(node.id);
  const op = conv === undefined ? null : fusedInputOp(graph.nodes[conv], inputs[0].shape);
  if (op && node.op.kind === 'batchnorm') {
    const bn = node.module as BatchNorm;
    // A frozen batch norm (eval mode inside a training model) normalizes with its running statistics: not fused.
    if (bn.training) {
      quantized.set(conv!, bn.inContext(() => batchNormFakeQuantize(inputs[0], bn, op)));
      return null;
    }
  } else if (op) {
    const joined = addReluFakeQuantize(inputs[0], inputs[1], op);
    quantized.set(conv!, joined.q);
    return joined.y;
  }
  const q = quantized.get(node.id);
  return q ? (node.module as QConv2d).forwardQuantized(q) : runNode(node, inputs);
}

/** The graph's output for input x. The caller owns x and the returned tensor. */
export function runGraph(graph: Graph, x: Tensor, opts: RunOptions = {}): Tensor {
  const release = !isGradEnabled();
  const readers = release ? consumers(graph).map((c) => c.length) : [];
  const values: (Tensor | null)[] = graph.nodes.map(() => null);
  /** Inputs already fake-quantized for the convolution (by node id) by the op before it. */
  const quantized = new Map<number, Tensor>();
  const rewrite = opts.rewrite;
  values[0] = rewrite?.output ? rewrite.output(graph.nodes[0], x) : x;
  opts.observe?.(graph.nodes[0], values[0]);
  for (const node of graph.nodes.slice(1)) {
    const inputs = node.inputs.map((i) => values[i]!);
    const computed = rewrite?.run?.(node, inputs) ?? runStep(graph, node, inputs, opts.fusion, quantized);
    const y = computed && rewrite?.output ? rewrite.output(node, computed) : computed;
    if (release && computed && y !== computed) computed.dispose();
    values[node.id] = y;
    if (y) opts.observe?.(node, y);
    if (!release) continue;
    for (const i of new Set(node.inputs)) {
      if (--readers[i] === 0 && (i !== 0 || values[0] !== x) && i !== graph.output) {
        values[i]?.dispose();
        values[i] = null;
      }
    }
  }
  return values[graph.output]!;
}

/**
 * The model's training forward through its fused graph: trace once on one sample's shape, then
 * every call runs the graph with the fusions (and the rewrite a pass makes of the traced graph,
 * e.g. the simulated deployment). Trace again after replacing layers.
 */
export function trainingForward(model: Module, sampleShape: Shape, rewriteOf?: (graph: Graph) => NodeRewrite): (x: Tensor) => Tensor {
  const graph = trace(model, sampleShape);
  const fusion = fuseForTraining(graph);
  const rewrite = rewriteOf?.(graph);
  return (x) => runGraph(graph, x, { fusion, rewrite });
}
