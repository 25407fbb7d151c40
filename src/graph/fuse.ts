/**
 * Training fusion, a pass over the graph: where an op's output is the input of a quantized
 * convolution, the op also applies the convolution's input quantizer in the same pass over the
 * activation, and the convolution takes the quantized tensor as it is.
 * - Batch norm (+ReLU) read only by the convolution: the backend's batchNormQuantizeTrain never
 *   stores the float batch-norm output (a pass saved forward and backward).
 * - A residual add+ReLU read by the convolution and others (the shortcut): addReluQuantize
 *   produces the join's output and the convolution's quantized input at once.
 * What the fusion decides here is structural; whether a fused op runs is decided on every call
 * (training mode, a per-tensor quantizer, no calibration pass: QConv2d.fusableInputOp), so eval,
 * calibration and the EWGS Hessian probes run the nodes as traced.
 */
import type { Shape } from '../backend/backend.js';
import { QConv2d } from '../quant/qlayers.js';
import { type Graph, type GraphNode, consumers, isKind } from './graph.js';

/** For each node that quantizes a convolution's input, that convolution's node id. */
export type TrainingFusion = ReadonlyMap<number, number>;

function quantizedConv(node: GraphNode): node is GraphNode & { module: QConv2d } {
  return node.module instanceof QConv2d && node.module.actQuantizer !== null;
}

/** Which nodes quantize which convolution's input (each convolution at most once). */
export function fuseForTraining(graph: Graph): TrainingFusion {
  const readers = consumers(graph);
  const fusion = new Map<number, number>();
  for (const node of graph.nodes) {
    const reading = readers[node.id].map((id) => graph.nodes[id]).filter((c) => c.inputs[0] === node.id && quantizedConv(c));
    if (isKind(node, 'batchnorm') && readers[node.id].length === 1 && reading.length === 1) fusion.set(node.id, reading[0].id);
    if (isKind(node, 'add') && node.op.relu && reading.length > 0) fusion.set(node.id, reading[0].id);
  }
  return fusion;
}

/** The op of a fused node when it can run now, for the convolution it feeds (see QConv2d.fusableInputOp). */
export function fusedInputOp(conv: GraphNode, shape: Shape): ReturnType<QConv2d['fusableInputOp']> {
  return quantizedConv(conv) ? conv.module.fusableInputOp(shape) : null;
}
