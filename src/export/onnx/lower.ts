/**
 * The ONNX pass: every node of the traced graph (src/graph) as ONNX nodes: convolutions and linear
 * layers (quantized ones through src/export/onnx/quant.ts), batch norm with its fused ReLU, ReLU and
 * clipped ReLU, residual adds, pooling, flatten and the option-A shortcut.
 */
import { type Graph, type GraphNode, GraphError, type NodeOp } from '../../graph/index.js';
import type { LayerQuantizers } from '../../graph/index.js';
import type { Tensor } from '../../tensor/tensor.js';
import { type GraphBuilder, floatAttr, intAttr, intsAttr } from './graph.js';
import { lowerActivation, lowerWeight } from './quant.js';

/** Slice's "to the end" (ONNX clamps ends to the dimension). */
const TO_END = Number.MAX_SAFE_INTEGER;

/** Lower every node of the graph, the graph input being the ONNX tensor `input`; returns the output's name. */
export function lowerGraphToOnnx(g: GraphBuilder, graph: Graph, input: string): string {
  const names: string[] = [input];
  for (const node of graph.nodes.slice(1)) names[node.id] = lowerNode(g, node, node.inputs.map((i) => names[i]));
  return names[graph.output];
}

function lowerNode(g: GraphBuilder, node: GraphNode, x: string[]): string {
  const op: NodeOp = node.op;
  const scope = node.name;
  switch (op.kind) {
    case 'conv': {
      const { input, weight, bias } = lowerOperands(g, scope, op.quant, op.weight, op.bias, x[0]);
      const [ph, pw] = op.padding;
      return g.node(scope, 'Conv', bias ? [input, weight, bias] : [input, weight], [
        intsAttr('kernel_shape', op.kernel),
        intsAttr('strides', op.stride),
        intsAttr('pads', [ph, pw, ph, pw]),
        intAttr('group', op.groups),
      ]);
    }
    case 'linear': {
      // y = x W^T + b as Gemm with transB.
      const { input, weight, bias } = lowerOperands(g, scope, op.quant, op.weight, op.bias, x[0]);
      return g.node(scope, 'Gemm', bias ? [input, weight, bias] : [input, weight], [intAttr('transB', 1)]);
    }
    case 'batchnorm': {
      const channels = [op.gamma.size];
      const y = g.node(
        scope,
        'BatchNormalization',
        [
          x[0],
          g.float(`${scope}.weight`, op.gamma.toArray(), channels),
          g.float(`${scope}.bias`, op.beta.toArray(), channels),
          g.float(`${scope}.running_mean`, op.mean.toArray(), channels),
          g.float(`${scope}.running_var`, op.variance.toArray(), channels),
        ],
        [floatAttr('epsilon', op.eps)],
      );
      return op.relu ? g.node(scope, 'Relu', [y]) : y;
    }
    case 'relu':
      return op.ceiling === null
        ? g.node(scope, 'Relu', x)
        : g.node(scope, 'Clip', [x[0], g.float(`${scope}.min`, Float32Array.of(0), []), g.float(`${scope}.max`, Float32Array.of(op.ceiling), [])]);
    case 'add': {
      const y = g.node(scope, 'Add', x);
      return op.relu ? g.node(scope, 'Relu', [y]) : y;
    }
    case 'avgpool':
    case 'maxpool': {
      const [ph, pw] = op.padding;
      const attrs = [intsAttr('kernel_shape', op.kernel), intsAttr('strides', op.stride), intsAttr('pads', [ph, pw, ph, pw])];
      return op.kind === 'avgpool'
        ? g.node(scope, 'AveragePool', x, [...attrs, intAttr('count_include_pad', 1)])
        : g.node(scope, 'MaxPool', x, attrs);
    }
    case 'globalavgpool':
      return g.node(scope, 'Flatten', [g.node(scope, 'GlobalAveragePool', x)], [intAttr('axis', 1)]);
    case 'flatten':
      return g.node(scope, 'Flatten', x, [intAttr('axis', 1)]);
    case 'shortcutpad':
      return lowerShortcutPad(g, scope, op.stride, op.padBefore, op.padAfter, x[0]);
    case 'input':
      throw new GraphError(`${scope}: a second graph input has no ONNX equivalent`);
  }
}

function scaled(values: Float32Array, factor: number): Float32Array {
  return factor === 1 ? values : values.map((v) => v * factor);
}

/**
 * Input, weight and bias of a convolution or linear layer. A quantized layer computes
 * |output_scale| * (op(Q_A(x), Q_W(w)) + bias) (EWGS's output scale, as its reference does); with
 * Q_A(x) = valueScale * (ONNX activation), both factors move into the weight scale and the output
 * scale into the bias.
 */
function lowerOperands(
  g: GraphBuilder,
  scope: string,
  q: LayerQuantizers | null,
  w: Tensor,
  b: Tensor | null,
  x: string,
): { input: string; weight: string; bias: string | null } {
  const act = q?.activation ? lowerActivation(g, q.activation, x, scope) : { output: x, valueScale: 1 };
  const outputScale = q?.outputScale ? Math.abs(q.outputScale.item()) : 1;
  const factor = act.valueScale * outputScale;
  const weight = q?.weight ? lowerWeight(g, q.weight, w, scope, factor) : g.float(`${scope}.weight`, scaled(w.toArray(), factor), w.shape);
  const bias = b ? g.float(`${scope}.bias`, scaled(b.toArray(), outputScale), b.shape) : null;
  return { input: act.output, weight, bias };
}

/** Every `stride`-th pixel (Slice with steps), then zero channels on both sides (Pad). */
function lowerShortcutPad(g: GraphBuilder, scope: string, stride: number, padBefore: number, padAfter: number, x: string): string {
  let y = x;
  if (stride !== 1) {
    y = g.node(scope, 'Slice', [
      y,
      g.int64(`${scope}.starts`, [0, 0]),
      g.int64(`${scope}.ends`, [TO_END, TO_END]),
      g.int64(`${scope}.axes`, [2, 3]),
      g.int64(`${scope}.steps`, [stride, stride]),
    ]);
  }
  if (padBefore > 0 || padAfter > 0) y = g.node(scope, 'Pad', [y, g.int64(`${scope}.pads`, [0, padBefore, 0, 0, 0, padAfter, 0, 0])]);
  return y;
}
