/**
 * Run a traced graph on a batch: each layer node calls its layer, each functional node its op,
 * in graph order. Eval-mode results equal the model's own forward (the same ops in the same
 * order); passes use it to see every intermediate value (calibration ranges, per-node checks).
 * A value is freed as soon as its last reader has run.
 */
import * as ops from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';
import { type Graph, GraphError, type GraphNode, consumers } from './graph.js';

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
 * The graph's output for input x; `observe` sees every node's output (node 0: x itself) while it
 * is alive. The caller owns x and the returned tensor.
 */
export function runGraph(graph: Graph, x: Tensor, observe?: (node: GraphNode, value: Tensor) => void): Tensor {
  const readers = consumers(graph).map((c) => c.length);
  const values: (Tensor | null)[] = graph.nodes.map(() => null);
  values[0] = x;
  observe?.(graph.nodes[0], x);
  for (const node of graph.nodes.slice(1)) {
    const y = runNode(node, node.inputs.map((i) => values[i]!));
    values[node.id] = y;
    observe?.(node, y);
    for (const i of new Set(node.inputs)) {
      if (--readers[i] === 0 && i !== 0 && i !== graph.output) {
        values[i]!.dispose();
        values[i] = null;
      }
    }
  }
  return values[graph.output]!;
}
