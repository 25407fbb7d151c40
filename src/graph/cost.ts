/**
 * What a (quantized) model costs: per layer, parameters, multiply-accumulates, bit-operations
 * (MACs x weight bits x activation bits) and stored weight bytes at the layer's bit-width.
 * Shapes come from the traced graph (one forward pass on a single zero image).
 */
import type { Shape } from '../backend/backend.js';
import type { Module } from '../nn/module.js';
import { type ConvNode, type Graph, type GraphNode, type LinearNode, isKind } from './graph.js';
import { trace } from './trace.js';

export interface LayerCost {
  readonly path: string;
  readonly kind: 'conv' | 'linear';
  readonly inputShape: readonly number[];
  readonly outputShape: readonly number[];
  /** Weights only (bias and batch norm are counted in `otherParams` of the totals). */
  readonly weights: number;
  readonly macs: number;
  readonly weightBits: number;
  /** Bits of the layer's input: the quantizer's, 8 for an image, else 32. */
  readonly inputBits: number;
  readonly bops: number;
  readonly weightBytes: number;
}

export interface ModelCost {
  readonly layers: LayerCost[];
  readonly macs: number;
  readonly bops: number;
  readonly weightBytes: number;
  /** Parameters outside conv/linear weights (biases, batch norm, quantizer scalars). */
  readonly otherParams: number;
}

/**
 * Costs of every conv and linear layer of a model for one sample of `sampleShape` ([C, H, W]):
 * a pass over its traced graph.
 */
export function modelCost(model: Module, sampleShape: Shape = [3, 32, 32]): ModelCost {
  const graph = trace(model, sampleShape);
  const layers = graph.nodes.filter((n) => isKind(n, 'conv', 'linear')).map((n) => layerCost(graph, n as GraphNode<ConvNode | LinearNode>));
  const layerWeights = new Set(graph.nodes.flatMap((n) => (isKind(n, 'conv', 'linear') ? [n.op.weight] : [])));
  const otherParams = model.parameters().filter((p) => !layerWeights.has(p)).reduce((a, p) => a + p.size, 0);
  return {
    layers,
    macs: layers.reduce((a, l) => a + l.macs, 0),
    bops: layers.reduce((a, l) => a + l.bops, 0),
    weightBytes: layers.reduce((a, l) => a + l.weightBytes, 0),
    otherParams,
  };
}

function layerCost(graph: Graph, node: GraphNode<ConvNode | LinearNode>): LayerCost {
  const source = graph.nodes[node.inputs[0]];
  const quant = node.op.quant;
  const weightBits = quant?.weight?.bits ?? 32;
  const inputBits = quant?.activation?.bits ?? (isKind(source, 'input') ? 8 : 32);
  const weights = node.op.weight.size;
  const spatial = node.shape.length === 3 ? node.shape[1] * node.shape[2] : 1;
  const macs = weights * spatial;
  return {
    path: node.name,
    kind: node.op.kind,
    inputShape: [1, ...source.shape],
    outputShape: [1, ...node.shape],
    weights,
    macs,
    weightBits,
    inputBits,
    bops: macs * weightBits * inputBits,
    weightBytes: Math.ceil((weights * weightBits) / 8),
  };
}
