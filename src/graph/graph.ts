/**
 * The model graph: a model recorded once (by `trace`) as a list of nodes in execution order, each
 * one layer or one functional op, with its hyper-parameters, tensors, quantizers and the shape of
 * its output. Every pass that needs the structure of a network (calibration, lowering to the
 * integer model, ONNX export, the agreement check) reads this graph, never a model class.
 *
 * Nodes refer to the model's own parameter and buffer tensors (not copies), so a graph traced once
 * stays valid while the weights change (training, loading a checkpoint); re-trace after replacing
 * layers (e.g. `quantize`).
 */
import type { Shape } from '../backend/backend.js';
import type { Module } from '../nn/module.js';
import type { TensorQuantizer } from '../quant/quantizer.js';
import type { Tensor } from '../tensor/tensor.js';

/** [height, width] of a kernel, stride or padding. */
export type Pair = readonly [number, number];

/** The quantizers of a quantized conv or linear layer (null on a float layer). */
export interface LayerQuantizers {
  readonly weight: TensorQuantizer | null;
  /** Fake-quantizes the layer's input. */
  readonly activation: TensorQuantizer | null;
  /** EWGS's learnable output scale: |alpha| multiplies the layer's output (bias included). */
  readonly outputScale: Tensor | null;
}

export interface InputNode {
  readonly kind: 'input';
}

export interface ConvNode {
  readonly kind: 'conv';
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernel: Pair;
  readonly stride: Pair;
  readonly padding: Pair;
  readonly groups: number;
  readonly quant: LayerQuantizers | null;
}

export interface LinearNode {
  readonly kind: 'linear';
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly quant: LayerQuantizers | null;
}

/** Batch norm in inference form: y = gamma (x - mean) / sqrt(variance + eps) + beta, then the optional ReLU. */
export interface BatchNormNode {
  readonly kind: 'batchnorm';
  readonly gamma: Tensor;
  readonly beta: Tensor;
  readonly mean: Tensor;
  readonly variance: Tensor;
  readonly eps: number;
  readonly relu: boolean;
}

/** max(x, 0), clipped at `ceiling` when it is not null (ReLU6: 6). */
export interface ReluNode {
  readonly kind: 'relu';
  readonly ceiling: number | null;
}

/** a + b of two tensors of equal shape, with an optional ReLU. */
export interface AddNode {
  readonly kind: 'add';
  readonly relu: boolean;
}

/** Window pooling; average pooling counts padded positions (PyTorch's default), max pooling ignores them. */
export interface PoolNode {
  readonly kind: 'avgpool' | 'maxpool';
  readonly kernel: Pair;
  readonly stride: Pair;
  readonly padding: Pair;
}

/** Mean over height and width: (N, C, H, W) -> (N, C). */
export interface GlobalAvgPoolNode {
  readonly kind: 'globalavgpool';
}

/** (N, ...) -> (N, product of the rest). */
export interface FlattenNode {
  readonly kind: 'flatten';
}

/** The ResNet option-A shortcut: every `stride`-th pixel, channels zero-padded before and after. */
export interface ShortcutPadNode {
  readonly kind: 'shortcutpad';
  readonly stride: number;
  readonly padBefore: number;
  readonly padAfter: number;
}

export type NodeOp =
  | InputNode
  | ConvNode
  | LinearNode
  | BatchNormNode
  | ReluNode
  | AddNode
  | PoolNode
  | GlobalAvgPoolNode
  | FlattenNode
  | ShortcutPadNode;

export type NodeKind = NodeOp['kind'];

export interface GraphNode<O extends NodeOp = NodeOp> {
  /** Index in `Graph.nodes`. */
  readonly id: number;
  /** The module path of the layer (`layer1.0.conv1`), or of the module whose forward ran the op plus the op (`layer1.0.add`). */
  readonly name: string;
  readonly op: O;
  /** Ids of the nodes whose outputs this node reads, in argument order. */
  readonly inputs: readonly number[];
  /** Output shape of one sample (without the batch dimension). */
  readonly shape: Shape;
  /** The layer that runs this node, or null for a functional op. */
  readonly module: Module | null;
}

export interface Graph {
  /** In execution order: every node comes after its inputs. Node 0 is the input. */
  readonly nodes: readonly GraphNode[];
  readonly output: number;
}

/** The model cannot be traced, or a graph does not have the form a pass needs: names the node. */
export class GraphError extends Error {
  override name = 'GraphError';
}

/** For each node id, the ids of the nodes that read its output, in execution order. */
export function consumers(graph: Graph): readonly (readonly number[])[] {
  const out: number[][] = graph.nodes.map(() => []);
  for (const node of graph.nodes) for (const i of new Set(node.inputs)) out[i].push(node.id);
  return out;
}

/** Whether a node is of one of the given kinds (narrowing its op). */
export function isKind<K extends NodeKind>(node: GraphNode, ...kinds: K[]): node is GraphNode<Extract<NodeOp, { kind: K }>> {
  return (kinds as NodeKind[]).includes(node.op.kind);
}

/** One line per node, for error messages, `--debug` output and tests. */
export function describeGraph(graph: Graph): string {
  return graph.nodes
    .map((n) => `%${n.id} ${n.name} = ${n.op.kind}(${n.inputs.map((i) => `%${i}`).join(', ')}) [${n.shape.join(', ')}]`)
    .join('\n');
}
